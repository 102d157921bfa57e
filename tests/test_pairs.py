"""`pargs-batch pairs`: preference pairs from a run's own samples ordered by a gold measure, and the
quickstart's gold measure (positivity by a lexicon) on hand-made replies."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.positivity import gold_reward, positivity
from helpers import generate_rows
from pargs_batch.evaluation.pairs import heldout, prompt_pairs

CLI = str(Path(sys.executable).parent / "pargs-batch")


def test_positivity_counts_words_of_each_list_and_flips_a_negated_one():
    assert positivity("A lovely, sunny morning.") == 2.0
    assert positivity("It was cold and the bus was late.") == -2.0
    assert positivity("Lovely weather, but a terrible queue.") == 0.0
    assert positivity("It was not bad at all.") == 1.0  # "not" one word before "bad"
    assert positivity("It was never really good.") == -1.0  # two words before
    assert positivity("Happy happy day!") == 2.0  # each occurrence counts
    assert positivity("The train left at noon.") == 0.0
    assert gold_reward(["any", "prompt"], ["A happy day.", "A sad day."]) == [1.0, -1.0]


def test_every_two_samples_apart_by_more_than_the_margin_make_one_pair_the_higher_first():
    samples = [("a", 1.0), ("b", 3.0), ("c", 1.0), ("d", 1.5)]
    assert prompt_pairs(samples) == [("b", "a", 3.0, 1.0), ("d", "a", 1.5, 1.0), ("b", "c", 3.0, 1.0),
                                     ("b", "d", 3.0, 1.5), ("d", "c", 1.5, 1.0)]
    assert prompt_pairs(samples, min_margin=1.0) == [("b", "a", 3.0, 1.0), ("b", "c", 3.0, 1.0), ("b", "d", 3.0, 1.5)]
    assert prompt_pairs([("same", 2.0), ("same", 1.0)]) == []  # the same text is no preference


def test_the_heldout_share_is_stable_and_about_the_fraction():
    ids = [f"p{i}" for i in range(2000)]
    share = sum(heldout(i, 0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert [heldout(i, 0.25) for i in ids] == [heldout(i, 0.25) for i in ids]
    assert [heldout(i, 0.25, seed=1) for i in ids] != [heldout(i, 0.25) for i in ids]


@pytest.fixture(scope="module")
def sampled_run(world, models, tmp_path_factory):
    """12 prompts of the tiny world, 4 top-k samples each."""
    tmp = tmp_path_factory.mktemp("pairs")
    rows, _ = generate_rows(world, tmp, models, name="samples", decode={"method": "topk", "num_samples": 4},
                            data={"limit": 12})
    return tmp / "samples", rows


def run_pairs(*args) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "pairs", *map(str, args)], capture_output=True, text=True, timeout=1800)


def test_pairs_of_a_run_are_its_own_samples_ordered_by_the_gold(sampled_run, tmp_path):
    from experiments.world.tiny import gold_reward as tiny_gold

    run, rows = sampled_run
    out, held = tmp_path / "pairs.jsonl", tmp_path / "heldout.jsonl"
    done = run_pairs(run, "--gold", "experiments.world.tiny:gold_reward", "--out", out,
                     "--heldout-fraction", 0.3, "--heldout-out", held)
    assert done.returncode == 0, done.stderr
    train = [json.loads(line) for line in out.read_text().splitlines()]
    test = [json.loads(line) for line in held.read_text().splitlines()]
    assert train and test and not {p["id"] for p in train} & {p["id"] for p in test}  # a prompt's pairs stay together
    by_id = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    expected = 0
    for row_id, group in by_id.items():
        golds = tiny_gold([r["prompt"] for r in group], [r["response"] for r in group])
        expected += len(prompt_pairs([(r["response"], g) for r, g in zip(group, golds)]))
    assert len(train) + len(test) == expected
    for p in train + test:
        group = by_id[p["id"]]
        assert p["prompt"] == group[0]["prompt"]
        assert {p["chosen"], p["rejected"]} <= {r["response"] for r in group}
        assert tiny_gold([p["prompt"]] * 2, [p["chosen"], p["rejected"]]) == [p["chosen_gold"], p["rejected_gold"]]
        assert p["chosen_gold"] > p["rejected_gold"]
    assert f"wrote {len(train)} pairs" in done.stderr and f"wrote {len(test)} pairs" in done.stderr


def test_pairs_refuse_a_bad_gold_or_a_heldout_file_without_a_share(sampled_run, tmp_path):
    run, _ = sampled_run
    done = run_pairs(run, "--gold", "no_such_module:f", "--out", tmp_path / "p.jsonl")
    assert done.returncode == 2 and "gold_reward" in done.stderr and "no_such_module:f" in done.stderr
    done = run_pairs(run, "--gold", "experiments.world.tiny:gold_reward", "--out", tmp_path / "p.jsonl",
                     "--heldout-out", tmp_path / "h.jsonl")
    assert done.returncode == 2 and "--heldout-out" in done.stderr
    done = run_pairs(tmp_path / "nothing", "--gold", "experiments.world.tiny:gold_reward", "--out", tmp_path / "p.jsonl")
    assert done.returncode == 2 and "RUN_DIR" in done.stderr
