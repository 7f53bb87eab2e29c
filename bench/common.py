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
    return (f"nproc={os.cpu_count()} cpu='{cpu}' mem={mem} {gpu} "
            f"python={platform.python_version()} torch={torch.__version__} ray={ray_version}")


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


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class PeakRSS:
    """Peak resident memory (VmHWM) of processes whose command line contains a pattern.

    Polls /proc from a daemon thread, because Ray actors are gone (and their
    /proc entries with them) by the time a sweep returns. Linux only.
    """

    def __init__(self, pattern: str, interval: float = 0.5) -> None:
        import threading

        self.pattern = pattern
        self.interval = interval
        self.peaks: dict[int, tuple[int, str]] = {}  # pid -> (KiB, command line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _scan(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            cmd = _cmdline(pid)
            if self.pattern not in cmd:
                continue
            peak = _status_kib(pid, "VmHWM")
            if peak is not None and peak > self.peaks.get(pid, (0, ""))[0]:
                self.peaks[pid] = (peak, cmd[:60])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._scan()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def max_mib(self) -> float:
        return max((kib for kib, _ in self.peaks.values()), default=0) / 1024


def own_peak_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio_interval(ratios: list[float]) -> str:
    """Geometric mean of ``ratios`` and its 95% t-interval (over the log ratios)."""
    import numpy as np
    from scipy import stats

    logs = np.log(ratios)
    mean = logs.mean()
    if len(logs) < 2:
        return f"x{np.exp(mean):.2f} (one round: no interval)"
    half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
    low, high = np.exp(mean - half), np.exp(mean + half)
    return f"x{np.exp(mean):.2f}, 95% interval [x{low:.2f}, x{high:.2f}]"
