"""studies/ and runners/ import each other without circles: studies.storage sits below
studies.study (the heartbeat's retry lives in studies.recovery, below both), and no module of
either package imports another inside a function to dodge a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("studies", "runners")


def _imports(path: Path, pkg: str, top_level: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level else [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                                         for n in ast.walk(n)]
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(f"{pkg}.{node.module}")
            elif node.level == 0 and node.module and node.module.split(".")[0] in PACKAGES:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
    return out


def _graph(top_level=True):
    return {f"{pkg}.{f.stem}": _imports(f, pkg, top_level)
            for pkg in PACKAGES for f in sorted((ROOT / pkg).glob("*.py"))}


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for d in graph.get(n, ()):
            assert state.get(d) != 1, f"import circle: {' -> '.join(path + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[n] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_storage_is_below_study():
    graph = _graph()
    assert "studies.study" not in graph["studies.storage"]
    assert "studies.storage" in graph["studies.study"]
    assert "studies.study" not in graph["studies.recovery"] and "studies.storage" not in graph["studies.recovery"]


def test_no_function_level_import_between_the_packages():
    inner = _graph(top_level=False)
    assert not {m: deps for m, deps in inner.items() if deps}, inner
