"""mia-ray: membership inference attacks and defenses on pruned networks, swept with Ray.

The library's components (data, models, training, pruning, defenses, features, attacks,
metrics) are plain PyTorch and NumPy; only ``mia_ray.engine`` imports Ray.
"""

__version__ = "0.1.0"
