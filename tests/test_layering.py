"""The tree's layers: the core imports nothing above it, the batch and real-time paths never
import each other, the demo tooling sits on them, and the command line on top of everything."""

from __future__ import annotations

import ast
from pathlib import Path

from segops.settings import PROJECT_ROOT

# Each package may import its own layer's package and the ones below, never a sibling.
LAYERS = {"segops": 0, "orchestration": 1, "streaming": 1, "demo": 2, "segops_cli": 3}


def imported_packages(source: str) -> set[str]:
    """The top-level packages a module imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & LAYERS.keys()


def layering_breaks(package: str, source: str) -> list[str]:
    return sorted(
        imported for imported in imported_packages(source)
        if imported != package and LAYERS[imported] >= LAYERS[package]
    )


def test_every_import_runs_downwards():
    breaks = {
        str(path.relative_to(PROJECT_ROOT)): found
        for package in LAYERS
        for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
        if (found := layering_breaks(package, path.read_text()))
    }
    assert breaks == {}, f"imports that run upwards or sideways: {breaks}"


def test_the_check_sees_an_upward_or_sideways_import():
    assert layering_breaks("segops", "def f():\n    from segops_cli.main import main\n") == [
        "segops_cli"]
    assert layering_breaks("streaming", "import orchestration.realtime\n") == ["orchestration"]
    assert layering_breaks("demo", "from segops.clock import utc_now\n") == []


def test_every_package_is_in_a_layer():
    packages = {path.parent.name for path in Path(PROJECT_ROOT).glob("*/__init__.py")}
    assert packages - {"tests", "bench"} == LAYERS.keys()
