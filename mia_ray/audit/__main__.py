"""``python -m mia_ray.audit``: see :mod:`mia_ray.audit.cli`."""

import sys

from mia_ray.audit.cli import main

sys.exit(main())
