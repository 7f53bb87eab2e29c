"""Train N networks of one architecture as one stacked job, each as a lone fit would.

* :mod:`.layout`: the stacked state and how it maps onto each network;
* :mod:`.forward`: the stacked forward (grouped kernels, else vmap);
* :mod:`.optim`: ``torch.optim``'s functional Adam/SGD on stacked rows;
* :mod:`.fit`: :func:`fit_stacked`, target and shadow models (Adam, early stopping);
* :mod:`.attacks`: :func:`fit_attack_networks`, learned-attack networks (SGD, LR steps).

Which model specs train together is decided at plan time
(:func:`mia_ray.planner.cohorts`).
"""

from mia_ray.stacking.attacks import fit_attack_networks
from mia_ray.stacking.fit import fit_stacked, supports_hook

__all__ = ["fit_attack_networks", "fit_stacked", "supports_hook"]
