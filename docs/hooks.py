"""MkDocs hook: the parts of the docs that are generated, so each has one source of truth.

- ``<!-- config-reference -->`` (configuration.md): one table per config section of every command,
  made from the config dataclasses' own help text (``configlib.option(help, default)``).
- ``<!-- config-reference: generate.ray -->``: one section's table, where a page discusses it.
- ``<!-- test-table -->`` (testing.md): each ``tests/test_*.py`` and the first paragraph of its
  module docstring (every test file opens with what it proves).
- ``<!-- cli-reference -->`` (cli.md): every ``pargs-batch`` command the installed parser has
  (``pargs_batch.cli.build_parser()``, entry-point commands included): its usage and a table of its
  options, made from the parser's own help text.

The generators are plain functions (``config_reference``, ``config_keys``, ``test_table``,
``cli_reference``, ``cli_commands``, ``option_name``); tests/test_docs.py imports them as ``docs.hooks``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import re
import sys
import types
import typing
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # mkdocs loads this file by path; the configs import from the checkout
    sys.path.insert(0, str(ROOT))

# (anchor, the command that reads it, the top-level dataclass)
ROOTS = (
    ("generate", "pargs-batch generate", "pargs_batch.config:GenerateConfig"),
    ("evaluate", "pargs-batch evaluate", "pargs_batch.evaluation.config:EvalConfig"),
    ("compare", "pargs-batch compare --compare", "pargs_batch.comparison.config:CompareConfig"),
    ("train", "python -m rm_training.train", "rm_training.config:TrainConfig"),
    ("policy", "python -m rm_training.policy", "rm_training.policy_config:PolicyConfig"),
)

CONFIG_MARKER = re.compile(r"<!--\s*config-reference(?::\s*(?P<root>\w+)\.(?P<section>[\w.]+))?\s*-->")
TEST_MARKER = "<!-- test-table -->"
CLI_MARKER = "<!-- cli-reference -->"
USAGE_WIDTH = 100  # the usage lines are wrapped at this width, whatever the terminal building the site


def root_class(name: str) -> type:
    """The top-level config dataclass of the root named ``name`` (``generate``, ``evaluate``, ...)."""
    for anchor, _, target in ROOTS:
        if anchor == name:
            module, attr = target.split(":")
            return getattr(importlib.import_module(module), attr)
    raise KeyError(f"no config root {name!r}; known: {', '.join(r[0] for r in ROOTS)}")


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable key of the config dataclass ``cls`` as its dotted name (``decode.beta``), in
    declaration order; sections (dataclass-typed fields) are walked, not listed."""
    hints, keys = _hints(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += config_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _sections(cls: type, prefix: str = "", text: str = "") -> list[tuple[str, type, str]]:
    """(dotted prefix, dataclass, the help of the field holding it) of ``cls`` and every section
    below it, depth first."""
    hints = _hints(cls)
    found = [(prefix, cls, text)]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += _sections(hints[f.name], f"{prefix}{f.name}.", f.metadata.get("help", ""))
    return found


def type_name(tp: typing.Any) -> str:
    """A type as a YAML user reads it: ``int or null``, ``list of str``, ``mapping``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(type_name(a) for a in args)
        return text + " or null" if type(None) in typing.get_args(tp) else text
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (typing.Any,)
        return "list of " + ("mappings" if item is dict else type_name(item))
    if tp is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: typing.Any) -> str:
    """A default as it would be written in the YAML config: ``null``, ``true``, ``[]``, ``{a: 1}``."""
    if value is None:
        return "null"
    if value == "":
        return '""'
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def default_of(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:  # lists and mappings: the value the factory makes
        return yaml_value(f.default_factory())
    if f.default is dataclasses.MISSING:
        return "required"
    return yaml_value(f.default)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", r"\|")


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line, safe in a table cell."""
    return _cell((doc or "").strip().split("\n\n")[0])


def _code(text: str) -> str:
    ticks = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"  # the table extension does not split inside code spans


def section_table(cls: type, prefix: str = "") -> str:
    """The key | type | default | help table of the plain (non-section) fields of ``cls``."""
    hints = _hints(cls)
    rows = ["| key | type | default | help |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        rows.append(f"| {_code(prefix + f.name)} | {_cell(type_name(hints[f.name]))} | "
                    f"{_code(default_of(f))} | {_cell(f.metadata.get('help', ''))} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def section_anchor(root: str, prefix: str) -> str:
    return "-".join([root] + [p for p in prefix.split(".") if p])


def root_reference(root: str, command: str, cls: type, level: int = 2) -> str:
    """One command's reference: a heading, its top-level keys, then one table per section."""
    out = [f"{'#' * level} `{command}` {{#{root}}}", "",
           f"{first_paragraph(cls.__doc__)} "
           f"Generated from `{cls.__module__}.{cls.__qualname__}`.", ""]
    for prefix, section, text in _sections(cls):
        table = section_table(section, prefix)
        if not table:
            continue
        if prefix:
            out += [f"{'#' * (level + 1)} `{prefix.rstrip('.')}` {{#{section_anchor(root, prefix)}}}", "",
                    first_paragraph(section.__doc__) or _cell(text), ""]
        out += [table, ""]
    return "\n".join(out)


def config_reference() -> str:
    """Markdown for every config root (``ROOTS``): headings with stable anchors and the tables."""
    return "\n".join(root_reference(root, command, root_class(root)) for root, command, _ in ROOTS)


def section_reference(root: str, section: str) -> str:
    """The table of one section (``generate``, ``ray``), for the page that discusses it."""
    cls = root_class(root)
    for prefix, found, _ in _sections(cls):
        if prefix.rstrip(".") == section:
            return (section_table(found, prefix) + "\n\n"
                    f"*Generated from the config's help text; all keys: "
                    f"[configuration reference](configuration.md#{section_anchor(root, prefix)}).*\n")
    raise KeyError(f"{root} has no section {section!r}")


def docstring_summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line."""
    return first_paragraph(ast.get_docstring(ast.parse(path.read_text())))


def test_files(tests_dir: Path = ROOT / "tests") -> list[Path]:
    return sorted(tests_dir.glob("test_*.py"))


def test_table(tests_dir: Path = ROOT / "tests") -> str:
    """``| test file | what it proves |``, one row per tests/test_*.py, from its docstring."""
    rows = ["| test file | what it proves |", "| --- | --- |"]
    for path in test_files(tests_dir):
        rows.append(f"| `tests/{path.name}` | {docstring_summary(path)} |")
    return "\n".join(rows) + "\n"


test_table.__test__ = False  # a generator, not a test, should pytest ever collect this module
test_files.__test__ = False


# ---------------------------------------------------------------------- the command line


def cli_commands(parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = (),
                 text: str = "") -> list[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(command words, parser, its one-line help) of every command below ``parser`` (default:
    ``pargs_batch.cli.build_parser()``, so whatever the entry points installed add), depth first in
    the order ``pargs-batch --help`` lists them; a command with sub-commands (``world``) is listed
    before them."""
    if parser is None:
        from pargs_batch.cli import build_parser

        parser = build_parser()
    found = [(path, parser, text)] if path else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                found += cli_commands(child, path + (name,), helps.get(name, ""))
    return found


def cli_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and positional arguments of one command (``--help`` and sub-command choices left out)."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def option_name(action: argparse.Action) -> str:
    """How an option is written on the command line: its flags (``--log-file``), or a positional's
    metavar (``key=value``)."""
    return ", ".join(action.option_strings) if action.option_strings else (action.metavar or action.dest)


def command_anchor(words: tuple[str, ...]) -> str:
    return "-".join(words)


def _argument(action: argparse.Action) -> str:
    """What an option takes: nothing (a switch), one of its choices, its metavar or its type."""
    if action.nargs == 0:
        return "switch"
    if action.choices:
        text = "one of " + ", ".join(f"`{c}`" for c in action.choices)
    elif action.metavar and action.option_strings:
        text = _code(action.metavar)
    else:
        text = {int: "integer", float: "number"}.get(action.type, "text")
    if action.nargs in ("*", "+"):
        text = ("zero" if action.nargs == "*" else "one") + " or more, space-separated"
    if isinstance(action, argparse._AppendAction) and "repeat" not in (action.help or ""):
        text += " (repeatable)"
    return text


def _default(action: argparse.Action) -> str:
    if action.required and action.nargs not in ("*", "?"):  # argparse marks every positional required
        return "required"
    if action.nargs == 0:
        return "off"
    if action.default in (None, [], argparse.SUPPRESS):
        return "-"
    return _code(str(action.default))


def usage(parser: argparse.ArgumentParser, width: int = USAGE_WIDTH) -> str:
    """The parser's usage line(s), without the ``usage:`` prefix, wrapped at ``width``."""
    formatter = parser.formatter_class(prog=parser.prog, width=width)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def command_reference(words: tuple[str, ...], parser: argparse.ArgumentParser, text: str) -> str:
    """One command: a heading with a stable anchor, its help, its usage and its options' table."""
    out = [f"## `pargs-batch {' '.join(words)}` {{#{command_anchor(words)}}}", ""]
    if text:
        out += [_cell(text[0].upper() + text[1:]) + ("" if text.endswith((".", "?", "!")) else "."), ""]
    out += ["```text", usage(parser), "```", ""]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        out += ["Its commands: " + ", ".join(f"[`{name}`](#{command_anchor(words + (name,))})"
                                             for name in action.choices) + ".", ""]
    options = cli_options(parser)
    if options:
        out += ["| option | takes | default | help |", "| --- | --- | --- | --- |"]
        for action in options:
            out.append(f"| {_code(option_name(action))} | {_argument(action)} | {_default(action)} | "
                       f"{_cell(action.help or '')} |")
        out.append("")
    return "\n".join(out)


def cli_summary(commands) -> str:
    """``| command | what it does |``, one row per command, each linked to its section."""
    rows = ["| command | what it does |", "| --- | --- |"]
    for words, _, text in commands:
        rows.append(f"| [`{' '.join(words)}`](#{command_anchor(words)}) | {_cell(text)} |")
    return "\n".join(rows)


def cli_reference() -> str:
    """Markdown for every command of ``pargs-batch``: a summary table, then one section each."""
    commands = cli_commands()
    return "\n".join([cli_summary(commands), ""] + [command_reference(*c) for c in commands])


def _replace_config(match: re.Match) -> str:
    if match.group("root"):
        return section_reference(match.group("root"), match.group("section"))
    return config_reference()


def on_page_markdown(markdown: str, page, config, files) -> str:
    markdown = CONFIG_MARKER.sub(_replace_config, markdown)
    if TEST_MARKER in markdown:
        markdown = markdown.replace(TEST_MARKER, test_table())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown
