"""Layers run one way: attacks train through the training loop, never through the
stacked backend's internals, and the training layer (the loop and its backends)
imports nothing of the attacks. Read from the same import graph as the circle check."""

from __future__ import annotations

from test_import_circles import import_graph

TRAINING_LAYER = ("mia_ray.training", "mia_ray.recipe", "mia_ray.eager", "mia_ray.predict",
                  "mia_ray.stacking")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_attacks_never_import_the_stacked_backend():
    graph = import_graph()
    wrong = sorted((a, b) for a, deps in graph.items() if _within(a, ("mia_ray.attacks",))
                   for b in deps if _within(b, ("mia_ray.stacking",)))
    assert not wrong, f"attacks reach into the stacked backend: {wrong}; train through " \
                      "mia_ray.training.train"


def test_the_training_layer_never_imports_attacks():
    graph = import_graph()
    wrong = sorted((a, b) for a, deps in graph.items() if _within(a, TRAINING_LAYER)
                   for b in deps if _within(b, ("mia_ray.attacks", "mia_ray.defenses")))
    assert not wrong, f"the training layer imports what sits above it: {wrong}"


def test_the_checker_sees_the_edges_it_forbids():
    """The rule is read from a real graph: attacks do import the training loop."""
    graph = import_graph()
    assert "mia_ray.training" in graph["mia_ray.attacks.learned"]
    assert "mia_ray.stacking.layout" in graph["mia_ray.eager"]
