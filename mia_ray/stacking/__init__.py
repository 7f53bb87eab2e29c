"""The stacked backend of the training loop: N networks of one architecture as one job.

* :mod:`.layout`: the stacked state and how it maps onto each network;
* :mod:`.forward`: the stacked forward (grouped kernels, else vmap);
* :mod:`.optim`: ``torch.optim``'s Adam/SGD on stacked rows;
* :mod:`.backend`: :class:`Stacked`, a step's arithmetic for
  :func:`mia_ray.training.train`, which owns the loop.

Which model specs train together is decided at plan time
(:func:`mia_ray.planner.cohorts`); stacking imports nothing of attacks.
"""

from mia_ray.stacking.backend import Stacked

__all__ = ["Stacked"]
