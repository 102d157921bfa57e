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
    assert len(graph) > 30 and graph["pargs_batch.generate"]  # the walk found the tree and its imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert depth(graph) <= 13  # experiments (3 levels) over the library (10): a guard against growth


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_imports_nothing_built_on_it():
    for name, targets in import_graph().items():
        if name.startswith("pargs_batch"):
            above = {t for t in targets if t.split(".")[0] in ("rm_training", "experiments", "jobs")}
            assert not above, f"{name} imports {sorted(above)}"


def test_rm_training_uses_only_the_loader_and_the_scorers():
    # and the terminal helper its commands print through
    allowed = {"pargs_batch.configlib", "pargs_batch.config", "pargs_batch.scorers", "pargs_batch.reward",
               "pargs_batch.console"}
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
