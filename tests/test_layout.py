"""The code's shape as the developers' guide states it: converters/ is a library, gptoss_cli/'s packages import
without circles. Read from the source with ast, so an import added anywhere (also inside a function) counts."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module name an import statement in path names; `from a import b` gives a.b as well as a."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _unit(module: str) -> str | None:
    """The package (or top-level module) of gptoss_cli a dotted name belongs to: gptoss_cli.engine.x -> engine."""
    parts = module.split(".")
    return parts[1] if parts[0] == "gptoss_cli" and len(parts) > 1 else None


def package_graph() -> dict[str, set[str]]:
    """Edges between gptoss_cli's packages and top-level modules."""
    pkg = ROOT / "gptoss_cli"
    units = {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    units |= {p.stem for p in pkg.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in pkg.rglob("*.py"):
        src = path.relative_to(pkg).with_suffix("").parts[0]
        found = {_unit(m) for m in _imports(path)}
        graph.setdefault(src, set()).update(found & units - {src})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in graph, as the list of nodes around it, or None."""
    state: dict[str, int] = {}   # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_gptoss_cli_packages_import_without_circles():
    graph = package_graph()
    assert {"engine", "serve", "tools", "rpc", "memory", "hub", "chat", "quant", "commands"} <= graph.keys()
    assert find_cycle(graph) is None, f"import circle between packages: {' -> '.join(find_cycle(graph))}"


def test_engine_imports_no_front_end():
    """chat and serve share engine/, so it must not reach back into either (or into the Typer commands)."""
    assert not package_graph()["engine"] & {"chat", "serve", "tools", "commands", "cli", "ui"}


def _prints_outside_main(tree: ast.Module) -> list[int]:
    """Lines of print() calls, leaving out a module's `python -m` entry point (its top-level def main)."""
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    inside = {id(c) for m in mains for c in ast.walk(m)}
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id == "print" and id(n) not in inside]


def test_print_finder_sees_library_prints():
    tree = ast.parse("def f():\n    print(1)\ndef main():\n    print(2)\n")
    assert _prints_outside_main(tree) == [2]


def test_converters_is_a_library():
    """converters/ imports no Typer, no Rich and nothing of the CLI; outside a `python -m` entry it prints nothing."""
    for path in (ROOT / "converters").rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("typer", "rich", "gptoss_cli", "tqdm")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        lines = _prints_outside_main(ast.parse(path.read_text()))
        assert not lines, f"{path.relative_to(ROOT)} calls print() on line {lines[0]}"
