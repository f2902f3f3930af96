"""The layout promises of ``workbench/``: imports flow one way, no circles, files stay short.

Floors, lowest first (a module may import its own floor and the ones below, never above)::

    0  workbench, _registry, _validate, _lazy, distributed   shared plumbing
    1  data                                                  datasets
    2  encoders                                              towers, heads, embed, cache
    3  probes                                                pure measurements
    4  evals | methods                                       scoring | losses (not each other)
    5  train                                                 the one loop
    6  viz                                                   figures and explorers
    7  experiments                                           one study per notebook
    8  cli                                                   the command line
    9  __main__                                              ``python -m workbench`` → cli

Imports inside functions count too: a lazy import that runs up a floor is still a dependency
in the wrong direction. Registries reach upwards only through lazy *string* entries
(``Registry.register_lazy``), which this test does not follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "workbench"
FLOORS = {
    "workbench": 0,
    "_registry": 0,
    "_validate": 0,
    "_lazy": 0,
    "distributed": 0,
    "data": 1,
    "encoders": 2,
    "probes": 3,
    "evals": 4,
    "methods": 4,
    "train": 5,
    "viz": 6,
    "experiments": 7,
    "cli": 8,
    "__main__": 9,
}
MAX_LINES = 520  # "no file in workbench/ past ~500 lines"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every ``workbench.*`` module ``name`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("workbench"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("workbench"):
                continue
            found.add(target)
            for a in node.names:  # "from workbench.probes import spectra" imports a module
                found.add(f"{target}.{a.name}")
    return found


def _floor_of(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "workbench"
    if top not in FLOORS:
        raise AssertionError(f"{module}: top-level part {top!r} has no floor; add it to FLOORS")
    return top, FLOORS[top]


MODULES = _modules()


def test_every_top_level_part_has_a_floor() -> None:
    for name in MODULES:
        _floor_of(name)


@pytest.mark.parametrize("name", sorted(MODULES), ids=sorted(MODULES))
def test_imports_never_run_up_a_floor(name: str) -> None:
    top, floor = _floor_of(name)
    bad = []
    for target in _imports(name, MODULES[name]):
        if target not in MODULES:
            continue  # a name imported from a package, not a module
        t_top, t_floor = _floor_of(target)
        sideways = t_floor == floor and t_top != top and floor > 0
        if t_floor > floor or sideways:
            bad.append(f"{target} (floor {t_floor}, {t_top})")
    assert not bad, f"{name} (floor {floor}, {top}) imports upwards or sideways: {bad}"


def test_no_import_circles() -> None:
    graph = {n: {t for t in _imports(n, p) if t in MODULES and t != n} for n, p in MODULES.items()}
    # a package's __init__ re-exporting its own modules is not a circle through the package
    for n in graph:
        graph[n] = {
            t for t in graph[n] if not (MODULES[t].name == "__init__.py" and n.startswith(t))
        }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t] if t in stack else [n, t])
            elif t not in state:
                visit(t, [*stack, t])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import circles: " + "; ".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES), ids=sorted(MODULES))
def test_files_stay_short(name: str) -> None:
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[name]} has {n} lines (> {MAX_LINES}); split it by concept"


@pytest.mark.parametrize(
    "package", ["workbench.probes", "workbench.evals", "workbench.experiments", "workbench.viz"]
)
def test_lazy_package_names_are_unique(package: str) -> None:
    """A lazy package resolves a name from the first submodule listing it: two submodules
    exporting one name would make the second silently unreachable (``E.PAPER_TABLE7``)."""
    import importlib

    pkg = importlib.import_module(package)
    owner: dict[str, str] = {}
    clashes = []
    for sub in pkg._SUBMODULES:
        for name in getattr(importlib.import_module(f"{package}.{sub}"), "__all__", ()):
            if name in owner:
                clashes.append(f"{name} ({owner[name]}, {sub})")
            owner.setdefault(name, sub)
    assert not clashes, f"{package}: names exported by two submodules: {clashes}"
