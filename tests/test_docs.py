"""The documentation site builds and tells the truth about the code: `mkdocs build --strict` passes
(every internal link and anchor resolves), the configuration reference lists every key of every
command's config - and no key the code does not have - the command-line reference every command and
option of `pargs-batch` and no other, the testing page every test file, and the troubleshooting
page quotes the messages the code prints.

The site is built once, in a subprocess, into a temporary directory; the generated parts come from
docs/hooks.py, imported here as ``docs.hooks``.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from docs import hooks
from pargs_batch.configlib import option

ROOT = Path(__file__).resolve().parents[1]


class Tables(HTMLParser):
    """The first cell of every table body row, under the id of the h2 and h3 headings above it."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[str, str, str]] = []  # (h2 id, h3 id, first cell text)
        self.h2 = self.h3 = ""
        self._cell: list[str] | None = None
        self._first = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.h2, self.h3 = attrs.get("id", ""), ""
        elif tag == "h3":
            self.h3 = attrs.get("id", "")
        elif tag == "tr":
            self._first = True
        elif tag == "td" and self._first:
            self._cell, self._first = [], False

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows.append((self.h2, self.h3, "".join(self._cell).strip()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def first_cells(html: str) -> list[tuple[str, str, str]]:
    parser = Tables()
    parser.feed(html)
    return parser.rows


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_site_builds_strict_with_every_page(site):
    nav_pages = ["index.md", "quickstart.md", "generating.md", "configuration.md", "cli.md", "serving.md", "methods.md",
                 "real-models.md", "gpu.md", "modes.md", "outputs.md", "ray.md", "evaluation.md", "compare.md",
                 "troubleshooting.md", "training.md", "world.md", "benchmarks.md", "architecture.md", "testing.md"]
    for page in nav_pages:
        built = site / "index.html" if page == "index.md" else site / page.removesuffix(".md") / "index.html"
        assert built.is_file(), f"{page} was not built"
    assert not (site / "hooks.py").exists(), "the hook is code, not a page to publish"
    for page, marker in (("configuration", "config-reference"), ("ray", "config-reference"), ("testing", "test-table"),
                         ("cli", "cli-reference")):
        assert marker not in (site / page / "index.html").read_text(), f"{page}: the {marker} marker was not replaced"


def test_configuration_page_lists_every_key_of_every_root_and_no_other(site):
    rows = first_cells((site / "configuration" / "index.html").read_text())
    for root, _, _ in hooks.ROOTS:
        expected = hooks.config_keys(hooks.root_class(root))
        listed = [key for h2, _, key in rows if h2 == root]
        assert listed, f"no table under the {root} heading"
        missing = sorted(set(expected) - set(listed))
        stale = sorted(set(listed) - set(expected))
        assert not missing, f"{root}: keys in the code but not on the page: {missing}"
        assert not stale, f"{root}: keys on the page but not in the code: {stale}"
        assert len(listed) == len(set(listed)), f"{root}: a key is listed twice"


def test_ray_page_table_is_the_generated_ray_section(site):
    rows = first_cells((site / "ray" / "index.html").read_text())
    listed = {key for _, _, key in rows if key.startswith("ray.")}
    expected = {key for key in hooks.config_keys(hooks.root_class("generate")) if key.startswith("ray.")}
    assert listed == expected


def test_testing_page_lists_every_test_file(site):
    rows = first_cells((site / "testing" / "index.html").read_text())
    listed = {cell for _, _, cell in rows}
    files = sorted(ROOT.glob("tests/test_*.py"))
    assert len(files) > 30
    for path in files:
        assert f"tests/{path.name}" in listed, f"{path.name} is missing from the testing page"
    assert "test_docs.py" in (site / "testing" / "index.html").read_text()


class Headings(HTMLParser):
    """(id, text) of every h2, its permalink sign left out."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self._text: list[str] | None = None
        self._link = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self._text, self._id = [], attrs.get("id", "")
        elif tag == "a" and "headerlink" in (attrs.get("class") or ""):
            self._link = True

    def handle_endtag(self, tag):
        if tag == "a":
            self._link = False
        elif tag == "h2" and self._text is not None:
            self.found.append((self._id, "".join(self._text).strip()))
            self._text = None

    def handle_data(self, data):
        if self._text is not None and not self._link:
            self._text.append(data)


def parser_commands(parser: argparse.ArgumentParser, words: tuple = ()) -> dict[tuple, list[str]]:
    """Every command below ``parser`` -> how each of its options is written (flags, or a positional's
    metavar), walked here apart from the generator's own walk."""
    found = {words: [", ".join(a.option_strings) or a.metavar or a.dest for a in parser._actions
                     if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]} if words else {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(parser_commands(child, words + (name,)))
    return found


def test_cli_page_lists_every_command_and_option_and_no_other(site):
    from pargs_batch.cli import build_parser

    html = (site / "cli" / "index.html").read_text()
    commands = parser_commands(build_parser())
    # the library's commands and those its entry points add
    assert {"generate", "evaluate", "compare", "serve", "plan", "init", "demo", "bench", "frontier", "diagnose-rm",
            "world"} <= {words[0] for words in commands}
    assert ("world", "build") in commands
    headings = Headings()
    headings.feed(html)
    on_page = {text: anchor for anchor, text in headings.found if text.startswith("pargs-batch ")}
    assert set(on_page) == {"pargs-batch " + " ".join(words) for words in commands}, "commands differ"
    rows = first_cells(html)
    for words, options in commands.items():
        anchor = on_page["pargs-batch " + " ".join(words)]
        listed = [cell for h2, _, cell in rows if h2 == anchor]
        missing = sorted(set(options) - set(listed))
        stale = sorted(set(listed) - set(options))
        assert not missing, f"{' '.join(words)}: options of the parser not on the page: {missing}"
        assert not stale, f"{' '.join(words)}: options on the page the parser lacks: {stale}"
        assert len(listed) == len(set(listed)), f"{' '.join(words)}: an option is listed twice"
    assert "--log-file" in commands[("generate",)] and "key=value" in commands[("generate",)]


def test_cli_generator_shows_each_kind_of_option():
    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run it")
    run.add_argument("--config", help="a | file")
    run.add_argument("--port", type=int, default=8000, help="a port")
    run.add_argument("--fast", action="store_true", help="go fast")
    run.add_argument("--kind", choices=["a", "b"], default="a")
    run.add_argument("--budget", action="append", default=[], metavar="M.K=V1,V2", help="a budget")
    run.add_argument("--data", required=True, help="the data")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="overrides")
    group = sub.add_parser("group", help="a group")
    group.add_subparsers(dest="inner", required=True).add_parser("leaf", help="a leaf?")
    commands = hooks.cli_commands(parser)
    assert [words for words, _, _ in commands] == [("run",), ("group",), ("group", "leaf")]
    text = hooks.command_reference(*commands[0])
    assert "## `pargs-batch run` {#run}" in text and "Run it." in text
    assert "tool run [-h]" in text and "[key=value ...]" in text
    assert r"| `--config` | text | - | a \| file |" in text
    assert "| `--port` | integer | `8000` | a port |" in text
    assert "| `--fast` | switch | off | go fast |" in text
    assert "| `--kind` | one of `a`, `b` | `a` |  |" in text
    assert "| `--budget` | `M.K=V1,V2` (repeatable) | - | a budget |" in text
    assert "| `--data` | text | required | the data |" in text
    assert "| `key=value` | zero or more, space-separated | - | overrides |" in text
    inner = hooks.command_reference(*commands[1])
    assert "[`leaf`](#group-leaf)" in inner and "| option |" not in inner
    assert "## `pargs-batch group leaf` {#group-leaf}" in hooks.command_reference(*commands[2])
    assert "A leaf?\n" in hooks.command_reference(*commands[2])


def test_the_troubleshooting_pages_messages_are_the_codes(tmp_path):
    """The messages the page quotes, made by the code that prints them (those a test can make without
    a model: config errors, a run directory holding another run, the server's 400s)."""
    from pargs_batch.config import DecodeConfig, GenerateConfig
    from pargs_batch.configlib import ConfigError, load_config
    from pargs_batch.io.output import RunDir
    from pargs_batch.serving.server import Policy, RequestError, check_servable

    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    here = f"model.path={ROOT}"

    def refusal(*overrides) -> str:
        with pytest.raises(ConfigError) as e:
            load_config(GenerateConfig, None, list(overrides))
        return str(e.value)

    made = [refusal("decode.bogus=1").split("; known keys")[0],
            refusal("foo"),
            refusal(here, "decode.method=pargs"),
            refusal(here, "decode.method=topk", "decode.top_k=50"),
            refusal("model.path=./llm")]
    with pytest.raises(ConfigError) as e:
        check_servable(load_config(GenerateConfig, None, [here, f"reward.path={ROOT}", "decode.method=best-of-n"]))
    made.append(str(e.value))
    RunDir(str(tmp_path / "run"), {"decode": {"seed": 0, "top_k": 10}}, {}, "zstd")
    with pytest.raises(ConfigError) as e:
        RunDir(str(tmp_path / "run"), {"decode": {"seed": 3, "top_k": 5}}, {}, "zstd")
    made.append(str(e.value).replace(repr(str(tmp_path / "run")), "'outputs/run'"))
    guided = Policy(decode=DecodeConfig(), eos_ids=[0], max_logprobs=20, reward_models=1)
    unguided = Policy(decode=DecodeConfig(method="topk"), eos_ids=[0], max_logprobs=20, reward_models=0)
    for policy, body in [(guided, {"top_k": 64}), (unguided, {"method": "pargs"}), (guided, {"method": "beam"}),
                         (guided, {"n": 4}), (guided, {"reward_weights": [1, 2]})]:
        with pytest.raises(RequestError) as e:
            policy.translate({"prompt": "x", **body}, chat=False)
        made.append(str(e.value))
    for message in made:
        assert message in page, f"the troubleshooting page does not quote: {message}"


@dataclasses.dataclass
class _Inner:
    """An inner section."""

    rate: float = option("a rate", 5e-6)


@dataclasses.dataclass
class _Toy:
    """A toy root."""

    name: str | None = option("a name", None)
    tags: list[str] = option("some tags", factory=lambda: ["all-linear"])
    extra: dict = option("a mapping | with a pipe", factory=lambda: {"num_cpus": 1, "num_gpus": 0})
    flag: bool = option("a flag", False)
    empty: str = option("an empty default", "")
    inner: _Inner = option("the inner section", factory=_Inner)


def test_generator_shows_yaml_values_types_and_nested_keys():
    assert hooks.config_keys(_Toy) == ["name", "tags", "extra", "flag", "empty", "inner.rate"]
    text = hooks.root_reference("toy", "toy command", _Toy)
    assert "| `name` | str or null | `null` | a name |" in text
    assert "| `tags` | list of str | `[all-linear]` | some tags |" in text
    assert r"| `extra` | mapping | `{num_cpus: 1, num_gpus: 0}` | a mapping \| with a pipe |" in text
    assert "| `flag` | bool | `false` | a flag |" in text
    assert '| `empty` | str | `""` |' in text
    assert "### `inner` {#toy-inner}" in text and "| `inner.rate` | float | `5.0e-06` | a rate |" in text


def test_marker_replacement_leaves_no_marker():
    page = "a\n<!-- config-reference: generate.decode -->\nb\n<!-- test-table -->\n<!-- cli-reference -->\n"
    out = hooks.on_page_markdown(page, None, None, None)
    assert "<!--" not in out and "`decode.beta`" in out and "`tests/test_docs.py`" in out
    assert "## `pargs-batch generate` {#generate}" in out


def test_the_documented_world_is_the_one_the_demo_compares_with():
    """The fingerprint the docs print is the one `make demo` checks its world against, and the demo's
    last line says which case a reader is in."""
    from dataclasses import asdict

    from experiments.world.default import DOCUMENTED_FINGERPRINT, DefaultWorldSpec, fingerprint_note

    assert DOCUMENTED_FINGERPRINT in (ROOT / "docs" / "world.md").read_text()
    assert DOCUMENTED_FINGERPRINT in (ROOT / "README.md").read_text()
    default = {"spec": asdict(DefaultWorldSpec())}
    assert "expect the docs' figures digit for digit" in fingerprint_note({**default, "fingerprint": DOCUMENTED_FINGERPRINT})
    assert "not the documented" in fingerprint_note({**default, "fingerprint": "0" * 16})
    assert "not the default spec" in fingerprint_note({"spec": asdict(DefaultWorldSpec.reduced()), "fingerprint": "x"})
