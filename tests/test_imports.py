"""The import graph of src/larft has no circle: every `larft.*` import counts, at module level or
inside a function (a lazy import still ties the two modules together for whoever reads them)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    """Every module under src/larft by its dotted name (a package by its own name, not `.__init__`)."""
    found = {}
    for path in sorted((SRC / "larft").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The larft modules `name` imports anywhere in its file: `import larft.x`, `from larft.x import y`
    (y itself when it is a module: `from larft import data`), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    found = set()
    for target in targets:  # `import larft.eval.runner` is larft.eval.runner; a name in a module, that module
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_module_and_function_level_imports():
    graph = import_graph()
    assert {"larft", "larft.cli", "larft.train", "larft.baselines", "larft.run_setup", "larft.eval.runner"} <= set(graph)
    assert "larft.config" in graph["larft.train"]  # module level
    assert "larft.trainer" in graph["larft.train"]  # inside train()
    assert "larft.data" in graph["larft.cli"]  # `from larft import data`
    assert {"larft.train", "larft.baselines"} <= graph["larft.cli"]  # the CLI chooses the method
    assert "larft.run_setup" in graph["larft.baselines"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_src_larft_has_no_import_circle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)
    assert "larft.baselines" not in graph["larft.train"] and "larft.train" not in graph["larft.baselines"]
