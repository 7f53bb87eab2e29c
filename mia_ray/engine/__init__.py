"""The Ray layer: the only package in mia_ray that imports ray."""

from mia_ray.engine.sweep import SweepResult, layout, run_sweep, validate

__all__ = ["SweepResult", "layout", "run_sweep", "validate"]
