"""The layers hold: the import graph (every import, lazy ones included) has no cycle, the library
imports nothing built on it, and rm_training uses only the library's loader and scorers."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pargs_batch", "rm_training", "experiments", "jobs")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file (``from a import b`` counts
    ``a.b`` when that is a module, else ``a``); parent packages are not counted."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                         for a in node.names]
            else:
                continue
            targets |= {n for n in names if n in known and n != name}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def depth(graph: dict[str, set[str]]) -> int:
    """Modules on the longest import chain (the graph is acyclic)."""
    memo = {}

    def longest(node):
        if node not in memo:
            memo[node] = 1 + max((longest(n) for n in graph[node]), default=0)
        return memo[node]

    return max(longest(n) for n in graph)


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and graph["pargs_batch.generation"]  # the walk found the tree and its imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the longest chain, 15 modules: __main__ -> cli -> api -> comparison.run -> .tables -> .config (compare
    # sits on generate and evaluate) -> evaluation.scoring -> pool -> runners -> ... -> configlib; a guard
    # against growth
    assert depth(graph) <= 15


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_imports_nothing_built_on_it():
    for name, targets in import_graph().items():
        if name.startswith("pargs_batch"):
            above = {t for t in targets if t.split(".")[0] in ("rm_training", "experiments", "jobs")}
            assert not above, f"{name} imports {sorted(above)}"


def test_rm_training_uses_only_the_loader_and_the_scorers():
    # and the terminal helper its commands print through, and how a reward model reads (what it records)
    allowed = {"pargs_batch.configlib", "pargs_batch.config", "pargs_batch.rewards.factory", "pargs_batch.rewards.hf",
               "pargs_batch.console", "pargs_batch.rewards.reading"}
    for name, targets in import_graph().items():
        if name.startswith("rm_training"):
            library = {t for t in targets if not t.startswith("rm_training")}
            assert library <= allowed, f"{name} imports {sorted(library - allowed)}"


def test_experiments_are_reached_only_through_entry_points():
    """`pargs-batch demo | bench | frontier | world | diagnose-rm` exist because the packages above the library
    register them, not because the library names them."""
    import tomllib

    commands = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pargs_batch.commands"]
    assert set(commands) == {"diagnose-rm", "world", "demo", "bench", "frontier"}
    from pargs_batch.cli import build_parser

    parser = build_parser()
    for command in ("generate", "evaluate", *commands):
        assert parser.parse_args([command] + _required(command)).command == command


def _required(command: str) -> list[str]:
    return {"diagnose-rm": ["--reward-model", "m", "--pairs", "p"], "world": ["build"]}.get(command, [])


def private_uses() -> list[str]:
    """Every ``_name`` (not dunder) a project module takes from another project module: imported by
    name, or read as an attribute of an imported project module."""
    known, found = modules(), []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> project module
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in known and a.name != name:
                        aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if full in known:
                        aliases[a.asname or a.name] = full
                    elif private(a.name) and node.module != name:
                        found.append(f"{name} imports {full}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases:
                found.append(f"{name} reads {aliases[node.value.id]}.{node.attr}")
    return found


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_takes_another_modules_private_names():
    assert private_uses() == []


def test_the_private_name_check_finds_one(tmp_path, monkeypatch):
    import sys

    (tmp_path / "pargs_batch").mkdir()
    (tmp_path / "pargs_batch" / "__init__.py").write_text("")
    (tmp_path / "pargs_batch" / "a.py").write_text("def _hidden(): pass\n")
    (tmp_path / "pargs_batch" / "b.py").write_text("from pargs_batch.a import _hidden\nfrom pargs_batch import a\na._hidden()\n")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert private_uses() == ["pargs_batch.b imports pargs_batch.a._hidden", "pargs_batch.b reads pargs_batch.a._hidden"]


def test_each_test_file_says_what_it_proves_and_imports_no_other_test_file():
    """A test module opens with a docstring; shared helpers live in conftest.py or helpers.py."""
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    assert len(tests) > 30
    for path in tests:
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.name} has no docstring saying what it proves"
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0].startswith("test_") for n in names), f"{path.name} imports {names}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "spec_from_file_location":
                raise AssertionError(f"{path.name} loads a module by file path; import it as a package")
