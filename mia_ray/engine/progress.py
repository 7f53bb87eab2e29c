"""One live progress line instead of Tune's per-trial log flood."""

from __future__ import annotations

import sys
import time
from typing import Any

import ray
from ray import tune


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLine(tune.Callback):
    """Cells done of total, builds done of total, elapsed and ETA, every few seconds."""

    def __init__(self, coordinator: Any, *, total_cells: int, cached_cells: int,
                 every_s: float = 2.0, stream=None):
        self.coordinator = coordinator
        self.total = total_cells
        self.cached = cached_cells
        self.finished = 0
        self.failed = 0
        self.every_s = every_s
        # Not sys.stdout itself: Tune pickles callbacks with its experiment state.
        self.stream = stream
        self.start = time.time()
        self.last = 0.0
        self.tty = getattr(self.stream or sys.stdout, "isatty", lambda: False)()
        if not self.tty:  # a log file gets a line every 30 s, not a flood
            self.every_s = max(every_s, 30.0)

    def line(self, stats: dict[str, Any]) -> str:
        done = self.cached + self.finished
        elapsed = time.time() - self.start
        rate = self.finished / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - done) / rate) if rate > 0 else "?"
        return (f"[mia-ray] cells {done}/{self.total}  "
                f"models {stats['models_done']}/{stats['models_total']}  "
                f"attack fits {stats['fits_done']}/{stats['fits_total']}  "
                f"failed trials {self.failed}  elapsed {_clock(elapsed)}  ETA {eta}")

    def _print(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        try:
            stats = ray.get(self.coordinator.stats.remote(), timeout=5)
        except Exception:  # a restarting coordinator must not stop the sweep
            return
        end = "\r" if self.tty and not force else "\n"
        print(self.line(stats), end=end, file=self.stream or sys.stdout, flush=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.finished += 1
        self._print()

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.failed += 1
        self._print()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._print(force=True)
