"""The package's import graph: every module imports, memstack_ops.remote has no import cycle
(counting the lazy imports inside functions too), and no arrow climbs from the core up to the
task layer."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import memstack_ops

PKG = Path(memstack_ops.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """memstack_ops modules ``name`` imports anywhere in its body (module level or inside a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
            out |= subs or ({mod} if mod in known else set())
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def cycles(g: dict[str, set[str]], within: str) -> list[list[str]]:
    """Import cycles among the modules under ``within`` (a DFS from each module, bounded by the graph)."""
    nodes = {n for n in g if n == within or n.startswith(within + ".")}
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(g[path[-1]] & nodes):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest module
                walk([*path, nxt])

    for n in sorted(nodes):
        walk([n])
    return found


def test_every_module_imports():
    for m in pkgutil.walk_packages(memstack_ops.__path__, "memstack_ops."):
        if m.name != "memstack_ops.__main__":
            importlib.import_module(m.name)


def test_the_graph_walker_sees_a_cycle():
    g = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "q": {"p.a"}}
    assert cycles(g, "p") == [["p.a", "p.b", "p.c", "p.a"]]


def test_remote_has_no_import_cycle():
    g = graph()
    assert "memstack_ops.remote.release" in g and g["memstack_ops.remote.deploy"]  # the walk found the package
    assert cycles(g, "memstack_ops.remote") == []


def test_the_core_never_imports_the_task_layer():
    up = {n: sorted(d for d in deps if d.startswith("memstack_ops.tasks")) for n, deps in graph().items()
          if not n.startswith("memstack_ops.tasks") and n not in ("memstack_ops.cli", "memstack_ops.__main__")}
    assert {n: d for n, d in up.items() if d} == {}
