"""The package layout rules, checked on the source: no import cycles, data flows one way, the
device never imports the toolchain, the station or the dev helpers (only the demo, a dev
helper itself, starts the station), and the stethoscope link knows nothing of lungedge."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "firmware_bridge", "convert", "station", "bench")


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
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative (`from .. import service` has no module of its own)
                base = ".".join([*name.split(".")[:-node.level], *([base] if base else [])])
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
        if name == "edge.service.daemon":  # delivery is one boundary: the daemon knows Publisher
            assert "edge.delivery.spool" not in deps, "the daemon reaches past its Publisher"


# The device's packages by job, in the order data flows: a package imports only from the
# layers before it (or itself). So the pipeline emits its own domain types (the tracker's
# evidence is not the wire's), a source is opened without the root config, and delivery never
# reaches back into the service that wires it.
EDGE_LAYERS = (
    ("edge", "edge.clock", "edge.loader", "edge.checks", "edge.native", "edge.vocabulary"),
    ("edge.dsp", "edge.sources"),
    ("edge.pipeline",),
    ("edge.delivery",),
    ("edge.service",),
    ("edge.cli",),  # the offline tools: classify, monitor, plot
    ("edge.dev",),  # the demo (it runs classify, the monitor and the station) and its broker
    ("edge.cli.main",),  # the `lungedge` command: every tool behind one parser
    ("edge.__main__",),
)


def layer(name: str) -> tuple[int, str]:
    """The layer of an edge module and the package it belongs to there."""
    best = (-1, "")
    for i, packages in enumerate(EDGE_LAYERS):
        for p in packages:
            if (name == p or name.startswith(p + ".")) and len(p) > len(best[1]):
                best = (i, p)
    return best


def test_edge_layers_point_one_way() -> None:
    g = graph()
    broken = []
    for name, deps in g.items():
        if not name.startswith("edge"):
            continue
        mine, package = layer(name)
        assert mine >= 0, f"{name} is in no layer of EDGE_LAYERS: put it in one"
        for d in deps:
            theirs, other = layer(d)
            if d.startswith("edge") and d != "edge" and (
                    theirs > mine or (theirs == mine and other != package)):
                broken.append(f"{name} imports {d}")
    assert not broken, "imports against the flow: " + "; ".join(sorted(broken))


# The device's layers the other packages may use: the lowest ones, never the device's service or
# command line (the station imported edge.cli four times and built the device's whole config
# to get the tracker's defaults; the toolchain drew with edge.cli.plot). Benchmarks may also
# start a private broker (edge.dev).
BELOW_SERVICE = ("edge", "edge.clock", "edge.loader", "edge.checks", "edge.native",
                 "edge.vocabulary", "edge.dsp", "edge.sources", "edge.pipeline", "edge.delivery")
MAY_USE = {"station": BELOW_SERVICE, "convert": BELOW_SERVICE,
           "bench": (*BELOW_SERVICE, "edge.dev"), "firmware_bridge": ()}


def test_other_packages_use_the_device_below_its_service() -> None:
    broken = []
    for name, deps in graph().items():
        allowed = MAY_USE.get(name.split(".")[0])
        if allowed is None:
            continue
        for d in deps:
            if d.startswith("edge") and layer(d)[1] not in allowed:
                broken.append(f"{name} imports {d}")
    assert not broken, "past the device's lower layers: " + "; ".join(sorted(broken))


def test_the_station_database_has_one_owner() -> None:
    """Only the store (and its migrations) touch the station's tables: the router, the web UI
    and ingest go through `Store`, so every write has one owner."""
    g = graph()
    outside = sorted(name for name, deps in g.items()
                     if "station.schema" in deps
                     and not name.startswith(("station.store", "station.migrations",
                                              "bench")))  # a benchmark counts rows
    assert not outside, f"modules past the store, at its tables: {outside}"


def test_the_readme_map_is_the_layout() -> None:
    """The README's map of the code says what this test enforces: the device's layers in their
    order (each module or package of a layer named in that layer's step), and every package in
    the table of folders. (It named the layers without edge.vocabulary.)"""
    text = (ROOT / "README.md").read_text()
    start = text.index("`edge/` is in layers by job")
    steps = text[start:text.index("\n\n", start)].split("→")
    layers = [layer for layer in EDGE_LAYERS if not {"edge.cli.main", "edge.__main__"} & set(layer)]
    assert len(steps) == len(layers), (len(steps), [s[:40] for s in steps])
    for step, members in zip(steps, layers, strict=True):
        for module in members:
            if module == "edge":
                continue
            leaf = module.split(".")[-1]
            named = f"`{leaf}/`" if (ROOT / module.replace(".", "/")).is_dir() else f"`{leaf}.py`"
            assert named in step, f"README's layer step {step.strip()[:60]!r} does not name {named}"
    folders = text[text.index("### Folders"):]
    for package in (*PACKAGES, "models", "systemd", "docs", "tests"):
        assert f"| `{package}/`" in folders, f"README's folders table has no {package}/"
