"""What a command shows on the terminal, and where everything else goes.

A command shows its stage lines, its own progress bars and its result (tables, the summary line);
everything the libraries underneath print - trainer step logs, vLLM and transformers warnings,
deprecation notices, Ray's banner, output of engine subprocesses - goes to a log file. ``quiet``
does this at the file-descriptor level, so the output of child processes (vLLM's engine core, Ray
workers started here) follows too. The command's own lines go through :data:`console`, which keeps
the terminal's descriptors. Outside ``quiet`` (in-process callers, tests, ``--verbose``),
:data:`console` simply writes to ``sys.stdout`` / ``sys.stderr``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path


class Console:
    """The terminal of a command: ``out`` for results, ``err`` for stage lines and progress bars."""

    def __init__(self):
        self._out = self._err = None

    @property
    def out(self):
        return self._out or sys.stdout

    @property
    def err(self):
        return self._err or sys.stderr

    def say(self, message: str) -> None:
        """One stage line (stderr, as progress is)."""
        print(message, file=self.err, flush=True)

    def show(self, text: str) -> None:
        """A result (stdout): a table, a summary line, JSON."""
        print(text, file=self.out, flush=True)


console = Console()
OWN_LOGGERS = ("pargs_batch", "rm_training", "experiments")


@contextlib.contextmanager
def quiet(log_path: str | Path):
    """Send file descriptors 1 and 2 (this process's and its children's) to ``log_path`` (appended)
    while :data:`console` keeps the terminal; restored on exit."""
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # fails before anything changes
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    console._out, console._err = out, err
    # this project's own warnings (a relative output path on Ray, a reward model's truncation) are
    # meant for the user: they reach the terminal as well as the log
    mine = logging.StreamHandler(err)
    mine.setLevel(logging.WARNING)
    mine.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in OWN_LOGGERS:
        logging.getLogger(name).addHandler(mine)
    try:
        yield path
    finally:
        for name in OWN_LOGGERS:
            logging.getLogger(name).removeHandler(mine)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        console._out = console._err = None
        out.close()
        err.close()
