"""Quiet by default: library output goes to the log at the descriptor level, the command's own lines
and a traceback reach the terminal."""

import subprocess
import sys
import textwrap


def test_quiet_sends_library_and_child_output_to_the_log_and_keeps_the_terminal(tmp_path):
    log = tmp_path / "logs" / "run.log"
    script = textwrap.dedent(f"""
        import logging, os, subprocess, sys, warnings
        from pargs_batch.console import console, quiet

        with quiet({str(log)!r}):
            print("library print")                      # a trainer's step dict
            logging.getLogger("lib").warning("library warning")
            logging.getLogger("pargs_batch.generation").warning("our own warning")
            warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
            subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"])
            console.say("stage line")
            console.show("result table")
        print("after quiet")
        with quiet({str(log)!r}):
            raise RuntimeError("boom")
    """)
    result = subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 1
    assert result.stdout == "result table\nafter quiet\n"
    assert result.stderr.startswith("WARNING pargs_batch.generation: our own warning\nstage line\n")
    assert "RuntimeError: boom" in result.stderr
    text = log.read_text()
    for line in ("library print", "library warning", "deprecated thing", "child out", "child err"):
        assert line in text and line not in result.stdout + result.stderr, line
    assert "stage line" not in text and "result table" not in text


def test_every_command_takes_verbose_and_log_file_except_the_light_ones():
    from pargs_batch.cli import _leaves, build_parser, log_path

    parser = build_parser()
    for leaf in _leaves(parser):
        options = {o for a in leaf._actions for o in a.option_strings}
        if leaf.prog.endswith("judge-server") or leaf.get_default("quiet") is False:  # light: nothing to hide
            assert "--verbose" not in options
        else:
            assert {"--verbose", "--log-file"} <= options, leaf.prog
    assert str(log_path(parser.parse_args(["demo", "--out", "x/demo"]))) == "x/demo/demo.log"
    assert str(log_path(parser.parse_args(["demo", "--log-file", "a.log"]))) == "a.log"
    assert str(log_path(parser.parse_args(["generate", "--config", "c.yaml"]))).startswith("outputs/logs/generate-")
