"""Helpers shared by the benchmark scripts: machine description and timing.

Scripts import this as ``common`` (Python puts the script's folder on the path).
Benchmarks print measured numbers and ratios; nothing here asserts a timing.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any


def machine() -> str:
    """One line: cores, CPU model, memory, Python, torch and ray versions."""
    import torch

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = "absent"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"nproc={os.cpu_count()} cpu='{cpu}' mem={mem} {gpu} python={platform.python_version()} "
            f"torch={torch.__version__} ray={ray_version}")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def busy_warning() -> str:
    """A warning line when other processes load the machine (timings would be skewed)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    if load > 0.5:
        return f"WARNING: 1-minute load average is {load:.2f} before the run; timings may be skewed"
    return ""
