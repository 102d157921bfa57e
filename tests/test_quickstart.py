"""The docs' quickstart, walked as written: every shell and Python block of docs/quickstart.md (but
the install) runs in order in one directory, on the tiny chat model (chat template, two end ids) and
a chat reward model built offline; the README's quickstart blocks are the docs' own."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SKIP = "<!-- not run by tests/test_quickstart.py"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each bash/python block, less those marked as not run."""
    return [(m["lang"], m["code"]) for m in BLOCK.finditer(path.read_text()) if not m["before"].startswith(SKIP)]


def test_the_readme_shows_the_docs_quickstart_blocks():
    docs = blocks(ROOT / "docs" / "quickstart.md")
    readme = blocks(ROOT / "README.md")
    assert [lang for lang, _ in docs] == ["bash", "python"]
    for block in docs:
        assert block in readme, f"README.md lacks the quickstart's {block[0]} block as written"


def quickstart_dir(world, chat_world, tmp_path):
    """The reader's directory and shell: four prompts of the world, the models in $LLM, $RM, $EVAL_RM."""
    rows = [line for line in open(world["prompts"])][:4]
    (tmp_path / "prompts.jsonl").write_text("".join(rows))
    return dict(os.environ, LLM=chat_world["llm"], RM=chat_world["reward_model"], EVAL_RM=world["reward_model_init"],
                PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def run_block(lang: str, code: str, cwd: Path, env: dict) -> None:
    command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{lang} block failed:\n{code}\n{result.stderr[-3000:]}"


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
