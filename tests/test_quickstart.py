"""The docs' quickstart, walked as written: every shell and Python block of docs/quickstart.md (but
the install) runs in order in one directory, on the tiny chat model (chat template, two end ids) and
a chat reward model built offline; the README's quickstart blocks are the docs' own."""

from pathlib import Path

import pytest

from helpers import doc_blocks as blocks
from helpers import reader_dir as quickstart_dir
from helpers import run_block

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_shows_the_docs_quickstart_blocks():
    docs = blocks(ROOT / "docs" / "quickstart.md")
    readme = blocks(ROOT / "README.md")
    assert [lang for lang, _ in docs] == ["bash", "python"]
    for block in docs:
        assert block in readme, f"README.md lacks the quickstart's {block[0]} block as written"


def check_run(path: Path, chat_world) -> None:
    import pargs_batch as pb

    out = pb.read_output(path).to_pylist()
    assert len(out) == 4 and all(r["error"] is None for r in out)
    assert all(not ({chat_world["end_id"], chat_world["eot_id"]} & set(r["response_token_ids"][:-1])) for r in out)


def test_the_command_line_quickstart_runs_as_written(world, chat_world, tmp_path):
    env = quickstart_dir(world, chat_world, tmp_path)
    (lang, code), _ = blocks(ROOT / "docs" / "quickstart.md")
    run_block(lang, code, tmp_path, env)
    assert "chat_template: true" in (tmp_path / "pargs.yaml").read_text()
    check_run(tmp_path / "outputs" / "prompts-pargs", chat_world)
    assert "reward ± SE" in (tmp_path / "outputs" / "eval" / "report.md").read_text()


def test_the_python_quickstart_runs_as_written(world, chat_world, tmp_path):
    """From the config the command-line block's first line (`init`) writes; the blocks run apart so
    the two xdist workers can take one each."""
    env = quickstart_dir(world, chat_world, tmp_path)
    (_, shell), (lang, code) = blocks(ROOT / "docs" / "quickstart.md")
    run_block("bash", shell.splitlines()[0], tmp_path, env)
    run_block(lang, code, tmp_path, env)
    for beta in ("0.0", "2.0"):
        check_run(tmp_path / "outputs" / f"beta-{beta}", chat_world)
    assert (tmp_path / "outputs" / "sweep" / "report.md").exists()
