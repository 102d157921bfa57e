"""The documentation site builds and tells the truth about the code: `mkdocs build --strict` passes
(every internal link and anchor resolves), the configuration reference lists every key of every
command's config - and no key the code does not have - and the testing page lists every test file.

The site is built once, in a subprocess, into a temporary directory; the generated parts come from
docs/hooks.py, imported here as ``docs.hooks``.
"""

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
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_site_builds_strict_with_every_page(site):
    nav_pages = ["index.md", "quickstart.md", "generating.md", "configuration.md", "serving.md", "methods.md",
                 "real-models.md", "gpu.md", "modes.md", "outputs.md", "ray.md", "evaluation.md", "compare.md", "training.md",
                 "world.md", "benchmarks.md", "architecture.md", "testing.md"]
    for page in nav_pages:
        built = site / "index.html" if page == "index.md" else site / page.removesuffix(".md") / "index.html"
        assert built.is_file(), f"{page} was not built"
    assert not (site / "hooks.py").exists(), "the hook is code, not a page to publish"
    for page, marker in (("configuration", "config-reference"), ("ray", "config-reference"), ("testing", "test-table")):
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
    page = "a\n<!-- config-reference: generate.decode -->\nb\n<!-- test-table -->\n"
    out = hooks.on_page_markdown(page, None, None, None)
    assert "<!--" not in out and "`decode.beta`" in out and "`tests/test_docs.py`" in out


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
