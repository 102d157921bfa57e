"""runners/best_of_n.py: Best-of-N keeps the candidate its reward model likes best, independent of
the micro-batch, and writes every candidate where the reader finds them only when asked."""

import numpy as np
import pytest

from pargs_batch.io.output import read_output

from helpers import generate_rows as generate

pytestmark = pytest.mark.slow


def test_best_of_n_keeps_the_best_candidate_and_is_batch_independent(world, tmp_path, models, scorer):
    bon = {"method": "best-of-n", "n_candidates": 4, "max_new_tokens": 24}
    rows, summary = generate(world, tmp_path, models, "bon64", data={"limit": 12},
                             decode=bon, output={"keep_all_candidates": True})
    small, _ = generate(world, tmp_path, models, "bon5", data={"limit": 12},
                        decode={**bon, "micro_batch_size": 5})
    assert [r["response_token_ids"] for r in rows] == [r["response_token_ids"] for r in small]
    cands = read_output(tmp_path / "bon64", kind="candidates").to_pylist()
    assert len(cands) == 12 * 4 and summary.tokens == sum(len(c["response_token_ids"]) for c in cands)
    for row in rows:
        mine = [c for c in cands if c["id"] == row["id"]]
        best = max(mine, key=lambda c: (c["reward"], -c["candidate_index"]))
        assert [c["selected"] for c in mine].count(True) == 1 and best["selected"]
        assert row["response"] == best["response"] and row["response_token_ids"] == best["response_token_ids"]
        assert np.isclose(row["rewards"][0], scorer.score([row["prompt"]], [row["response"]])[0], atol=1e-4)
        assert len({tuple(c["response_token_ids"]) for c in mine}) > 1  # N real samples
    # candidates are written where the reader finds them, and only when asked for
    from pargs_batch.io.output import CANDIDATES

    assert sorted(p.name for p in (tmp_path / "bon64" / CANDIDATES).glob("*.parquet"))
    assert not (tmp_path / "bon5" / CANDIDATES).exists() and not list((tmp_path / "bon5").rglob("cand-*"))
    with pytest.raises(FileNotFoundError):
        read_output(tmp_path / "bon5", kind="candidates")
