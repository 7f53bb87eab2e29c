"""No two modules of the project import each other, directly or through others.

Every import counts, at the top of a module or inside a function (a lazy import only
hides a circle until the day someone moves it up). A module reading names from its
own package (``mia_ray.attacks.threshold`` from ``mia_ray.attacks``) is left out:
Python initialises a package before any of its modules, so that edge is how a
package exposes its registry, not a circle between two modules.
"""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mia_ray", "analysis")


def module_names() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the module; ``from pkg import name`` the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target in modules and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_module_imports_one_that_imports_it_back():
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as e:
        circle = " -> ".join(e.args[1])
        pytest.fail(f"import circle: {circle}; give the pair one direction (move what both "
                    "need into a module that imports neither)")


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path, monkeypatch):
    """The detector itself: two modules that import each other, one of them lazily."""
    package = tmp_path / "mia_ray"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from mia_ray.b import g\n\ndef f():\n    return g()\n")
    (package / "b.py").write_text("def g():\n    from mia_ray import a\n    return a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("mia_ray",))
    graph = import_graph()
    assert graph["mia_ray.a"] == {"mia_ray.b"} and graph["mia_ray.b"] == {"mia_ray.a"}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())
