"""The package's layering, stated: each layer imports only the layers below it.

    errors <- targets, models <- graph <- mapping <- sim <- train <- pipeline
    (and verification, which assign and refine share) <- passes <- report <- driver <- cli

graph holds model I/O, shapes, parity and data; mapping the Mapping, its
cost, solver, placement and annotations; sim the noise model, simulation
graph and scoring; train the torch side. report renders the JSON reports
beside the driver. No pass imports another pass. Imports are read with ast, function-local ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "hetmap": ROOT / "compiler",
    "hetmap.passes": ROOT / "passes",
    "hetmap.targets": ROOT / "targets",
    "hetmap.models": ROOT / "models",
}
LAYERS = (
    ("hetmap", "hetmap.errors"),  # what hetmap/__init__ offers below: __version__
    ("hetmap.targets", "hetmap.models"),
    ("hetmap.graph",),
    ("hetmap.mapping",),
    ("hetmap.sim",),
    ("hetmap.train",),
    ("hetmap.pipeline", "hetmap.verification"),
    ("hetmap.passes",),
    ("hetmap.report",),
    ("hetmap.driver",),
    ("hetmap.cli", "hetmap.cli_options", "hetmap.cli_checks", "hetmap.__main__"),
)


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix naming `module`."""
    best, rank = "", None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, rank = name, index
    assert rank is not None, f"module {module} is in no layer: add it to LAYERS"
    return rank


def importing_layer(module: str) -> int:
    """The package root holds __version__ (layer 0) and the console script's entry point, which imports the cli."""
    return len(LAYERS) if module == "hetmap" else layer_of(module)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (compiler/, passes/, targets/, models/)."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            found.setdefault(name, path)
    return found


def imported(path: Path, known: set[str]) -> set[str]:
    """The hetmap modules `path` imports; `from hetmap.x import y` counts y when it is a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == "hetmap")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "hetmap"
        ):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in known else node.module)
    return names


def import_edges() -> list[tuple[str, str]]:
    found = modules()
    return [(name, target) for name, path in found.items() for target in sorted(imported(path, set(found)))]


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


@pytest.mark.parametrize("importer,imported_module", import_edges())
def test_no_layer_imports_a_higher_one(importer, imported_module):
    low, high = importing_layer(importer), layer_of(imported_module)
    assert high <= low, f"{importer} (layer {low}) imports {imported_module} (layer {high}): only lower layers may be"


def _pass_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["hetmap", "passes"] else None


def test_no_pass_imports_another_pass():
    crossing = [(a, b) for a, b in import_edges() if _pass_of(a) and _pass_of(b) and _pass_of(a) != _pass_of(b)]
    assert crossing == []


def test_the_check_sees_a_violation(tmp_path):
    """The parser finds imports inside functions too: a sim module importing a pass would be caught."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from hetmap.passes.emit import Emit\n")
    (target,) = imported(source, set(modules()))
    assert target == "hetmap.passes.emit" and layer_of(target) > layer_of("hetmap.sim.bad")
