"""The examples page runs as written: each of its blocks is either run here, in a reader's directory
(four prompts, the tiny chat LLM and chat reward model, a second reward model, preference pairs), or
is the same text as a block another page's test runs against a live server or a full comparison."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import doc_blocks, reader_dir, run_block

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "examples.md"
INIT = 'pargs-batch init --llm "$LLM" --reward "$RM" --data prompts.jsonl --out pargs.yaml'


def sections() -> dict[str, tuple[str, str]]:
    """The page's blocks under their h2 headings (one block a heading)."""
    found, heading = {}, None
    blocks = iter(doc_blocks(PAGE))
    for line in PAGE.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("```bash") or line.startswith("```python"):
            assert heading not in found, f"two blocks under '{heading}'"
            found[heading] = next(blocks)
    return found


def test_every_scenario_has_one_block_and_the_shared_ones_are_the_pages_run_elsewhere():
    blocks = sections()
    assert list(blocks) == ["Generate and evaluate on one machine", "On a Ray cluster", "A stage of a Ray Data pipeline",
                            "Serve guided completions to an OpenAI client", "Train a partial-sequence reward model",
                            "Compare methods on your own models", "Several reward models"]
    # run by tests/test_quickstart.py, test_serve.py and test_compare.py on those pages
    assert blocks["Generate and evaluate on one machine"] == doc_blocks(ROOT / "docs" / "quickstart.md")[0]
    assert blocks["Serve guided completions to an OpenAI client"] == doc_blocks(ROOT / "docs" / "serving.md")[0]
    assert blocks["Compare methods on your own models"] == doc_blocks(ROOT / "docs" / "compare.md")[0]


def reader(world, chat_world, tmp_path, config: bool) -> dict:
    env = reader_dir(world, chat_world, tmp_path)
    env["PAIRS"] = world["preferences"]
    if config:  # the blocks that start from the config the first example's `init` wrote
        run_block("bash", INIT, tmp_path, env)
    return env


@pytest.mark.slow
def test_the_ray_cluster_example(world, chat_world, tmp_path):
    env = reader(world, chat_world, tmp_path, config=False)
    printed = run_block(*sections()["On a Ray cluster"], tmp_path, env)
    assert printed.stdout.splitlines()[-1] == "4 rows"  # the reader's 4 prompts, one sample each
    import pargs_batch as pb

    rows = pb.read_output(tmp_path / "outputs" / "on-ray").to_pylist()
    assert all(r["error"] is None and r["method"] == "pargs" for r in rows)
    ran = json.loads(pq.read_schema(next((tmp_path / "outputs" / "on-ray").glob("part-*.parquet"))).metadata[
        b"pargs_batch.config"])
    assert ran["ray"]["enabled"] is True and ran["ray"]["num_workers"] == 1  # the rows were made on Ray


@pytest.mark.slow
def test_the_ray_data_example(world, chat_world, tmp_path):
    env = reader(world, chat_world, tmp_path, config=True)
    printed = run_block(*sections()["A stage of a Ray Data pipeline"], tmp_path, env).stdout.splitlines()
    _, count, source, chars, finish = next(line for line in printed if line.startswith("rows: ")).split()
    assert (int(count), source, finish in ("eos", "length", "stop")) == (4, "reviews", True) and int(chars) >= 0


@pytest.mark.slow
def test_the_training_example(world, chat_world, tmp_path):
    env = reader(world, chat_world, tmp_path, config=False)
    (tmp_path / "rm_training").mkdir()
    (tmp_path / "rm_training" / "configs").symlink_to(ROOT / "rm_training" / "configs")  # a checkout's recipes
    run_block(*sections()["Train a partial-sequence reward model"], tmp_path, env)
    trained = tmp_path / "outputs" / "rm" / "partial"
    assert (trained / "config.json").exists()
    written = (tmp_path / "own-rm.yaml").read_text()
    assert str(trained) in written or "outputs/rm/partial" in written


@pytest.mark.slow
def test_the_several_reward_models_example(world, chat_world, tmp_path):
    env = reader(world, chat_world, tmp_path, config=True)
    printed = run_block(*sections()["Several reward models"], tmp_path, env).stdout.splitlines()
    count = printed[-1].split(" ", 1)[0]
    import pargs_batch as pb

    rows = pb.read_output(tmp_path / "outputs" / "two-rms").to_pylist()
    assert int(count) == len(rows) == 4 and all(r["error"] is None for r in rows)
    # the rows name both reward models and their weights, and carry one reward a chosen token
    label = rows[0]["reward_model"]
    assert label in printed[-1] and "0.5*" in label and label.count("*") == 2
    assert all(len(r["rewards"]) == r["num_tokens"] for r in rows)
