"""The package layout rules, checked on the source: no import cycles, data flows one way, the
device never imports the toolchain, the station or the dev helpers (only the demo, a dev
helper itself, starts the station), and the stethoscope link knows nothing of lungedge."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "firmware_bridge", "convert", "station")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative
                base = ".".join([*name.split(".")[:-node.level], node.module])
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, name, known) for name, path in mods.items()}


def test_no_import_cycles() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            # a package and its own submodules (edge ↔ edge.x via __init__) are not a cycle
            if len({c for c in component if not any(c.startswith(o + ".")
                                                    for o in component)}) > 1:
                cycles.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_dependencies_point_one_way() -> None:
    g = graph()
    for name, deps in g.items():
        top = name.split(".")[0]
        tops = {d.split(".")[0] for d in deps}
        if top == "firmware_bridge":
            assert "edge" not in tops, f"{name} imports edge: the link must stand alone"
        if top == "edge" and not name.startswith("edge.dev"):  # the demo runs the station
            assert not tops & {"convert", "station"}, f"{name} imports {tops}"
            if not name.startswith(("edge.dev", "edge.cli")):
                assert not any(d.startswith("edge.dev") for d in deps), \
                    f"{name} imports a dev helper"
        if name == "edge.daemon":  # delivery is one boundary: the daemon knows the Publisher
            assert "edge.spool" not in deps, "edge.daemon reaches past its Publisher"
        if name.startswith("edge.dsp"):  # the signal path knows nothing after it
            later = {"edge.model", "edge.tracker", "edge.analysis", "edge.daemon",
                     "edge.publisher", "edge.spool", "edge.payloads"}
            assert not deps & later, f"{name} imports a later stage: {deps & later}"
