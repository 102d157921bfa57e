"""Preference adapters: HH-RLHF, TL;DR comparisons and generic layouts; malformed rows counted."""

import json


from rm_training.data import Triple, read_rows, split_hh, split_triples, to_triples

COLUMNS = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}


def test_hh_prompt_is_everything_through_the_last_assistant_turn():
    transcript = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I bowl?\n\nAssistant: Practice a lot."
    prompt, reply = split_hh(transcript)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I bowl?\n\nAssistant:"
    assert reply == " Practice a lot."


def test_hh_rows_and_their_malformed_reasons():
    head = "\n\nHuman: how do I bowl?\n\nAssistant:"
    rows = [
        {"chosen": head + " Practice.", "rejected": head + " No idea."},
        {"chosen": head + " Same.", "rejected": head + " Same."},
        {"chosen": head + " Fine.", "rejected": "\n\nHuman: other?\n\nAssistant: x"},
        {"chosen": head + " ", "rejected": head + " y"},
        {"chosen": "no turns at all", "rejected": head + " y"},
        {"rejected": head + " y"},
    ]
    triples, report = to_triples(rows, "hh", COLUMNS)
    assert triples == [Triple(head, " Practice.", " No idea.")]
    assert report.rows == 6 and report.triples == 1
    assert dict(report.malformed) == {"identical chosen and rejected": 1,
                                      "chosen and rejected have different prompts": 1,
                                      "empty response": 1, "no assistant turn": 1, "missing chosen": 1}
    assert report.to_dict()["malformed_fraction"] == round(5 / 6, 4)


def test_tldr_comparisons_layout():
    info = {"post": "My cat ignores me.", "title": "Cat help", "subreddit": "cats"}
    rows = [{"info": info, "summaries": [{"text": "cat is aloof"}, {"text": " cat ignores owner"}], "choice": 1},
            {"info": info, "summaries": [{"text": "a"}], "choice": 0},
            {"info": info, "summaries": [{"text": "a"}, {"text": "b"}], "choice": 2}]
    triples, report = to_triples(rows, "tldr", COLUMNS)
    assert triples == [Triple("SUBREDDIT: r/cats\nTITLE: Cat help\nPOST: My cat ignores me.\nTL;DR:",
                              " cat ignores owner", " cat is aloof")]
    assert dict(report.malformed) == {"missing info or summaries": 1, "choice is not 0 or 1": 1}


def test_generic_rows_from_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": "p1", "good": " a", "bad": " b"}, {"q": "p2", "good": None, "bad": " c"},
            {"q": "p3", "good": " d", "bad": " d"}]
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    columns = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    for name in ("x.jsonl", "x.parquet"):
        data, names = read_rows(str(tmp_path / name))
        assert names == ["q", "good", "bad"]
        triples, report = to_triples(data, "generic", columns)
        assert triples == [Triple("p1", " a", " b")]
        assert dict(report.malformed) == {"missing good": 1, "identical chosen and rejected": 1}


def test_split_is_seeded_and_disjoint():
    triples = [Triple(f"p{i}", " a", " b") for i in range(50)]
    train, held = split_triples(triples, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40 and not set(train) & set(held)
    assert split_triples(triples, 0.2, seed=3) == (train, held)
    assert split_triples(triples, 0.2, seed=4)[1] != held
