"""Seconds per attack fit for the learned attacks, before and after the dropout/SGD change.

    python bench/bench_attacks.py                  # small-grid setting, paper extrapolated
    python bench/bench_attacks.py --paper          # also run the paper's 100 epochs
    python bench/bench_attacks.py --profile samia  # where the time goes (torch.profiler)

Setting of one attack fit in the small grid: 4,040 pooled shadow samples (K = 5
shadows x 404 members + 404 non-members), C = 10, AttackSpec(epochs=10), batch 128,
one torch thread (as in a trainer actor). The paper trains 100 epochs; the schedule
costs the same per epoch, so its time is 10x the 10-epoch time unless --paper runs it.

"before" is the code as it was: torch's nn.Dropout (Bernoulli masks) and SGD's
per-tensor loop, restored by patching for the duration of the call; "after" is
mia_ray.attacks.learned as it is. Both run here side by side. The change alters
which dropout masks a seed draws, so the equivalence check fits both ways over
several seeds and compares the attacks' accuracy and AUC on a held-out target set.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

import numpy as np
import torch
from common import busy_warning, machine
from torch import nn

from mia_ray.attacks import make_attack, networks
from mia_ray.features import Features
from mia_ray.metrics import attack_metrics
from mia_ray.specs import AttackSpec

LEARNED = ("nn", "nn_top3", "nn_cls", "samia")
C = 10


def features(n: int, seed: int) -> Features:
    """Shadow-like features with a membership signal: members confident and stable."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, C, n)
    member = np.arange(n) < n // 2
    logits = rng.normal(size=(n, C))
    logits[np.arange(n), label] += np.where(member, 3.0, 1.5) + rng.normal(size=n)
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    sens = rng.gamma(2.0, np.where(member, 0.5, 0.8)[:, None], size=(n, C))
    return Features(prob, sens, label, member)


@contextlib.contextmanager
def before():
    """The learned attacks as they were: nn.Dropout and SGD without foreach."""
    sgd = torch.optim.SGD

    def loop_sgd(*args, **kwargs):
        return sgd(*args, **{**kwargs, "foreach": False})

    with mock.patch.object(networks, "Dropout", nn.Dropout), \
            mock.patch.object(torch.optim, "SGD", loop_sgd):
        yield


def fit_seconds(name: str, shadow: Features, spec: AttackSpec, old: bool) -> float:
    attack = make_attack(name, num_classes=C)
    with before() if old else contextlib.nullcontext():
        start = time.perf_counter()
        attack.fit(shadow, spec)
        return time.perf_counter() - start


def timing(shadow: Features, epochs: int, repeat: int) -> None:
    spec = AttackSpec(epochs=epochs)
    totals = {"before": 0.0, "after": 0.0}
    for name in LEARNED:
        fit_seconds(name, shadow, AttackSpec(epochs=1), old=False)  # warm-up
        # Alternate before/after so a change in machine load hits both alike.
        t = {"before": [], "after": []}
        for _ in range(repeat):
            t["before"].append(fit_seconds(name, shadow, spec, old=True))
            t["after"].append(fit_seconds(name, shadow, spec, old=False))
        b, a = min(t["before"]), min(t["after"])
        totals["before"] += b
        totals["after"] += a
        print(f"  {name:8s} epochs={epochs}: before {b:6.2f} s, after {a:6.2f} s, "
              f"x{b / a:.2f}", flush=True)
    b, a = totals["before"], totals["after"]
    print(f"  all four  epochs={epochs}: before {b:6.2f} s, after {a:6.2f} s, x{b / a:.2f}"
          + ("" if epochs == 100 else f"; paper's 100 epochs ~ {a * 100 / epochs:.0f} s after, "
             f"{b * 100 / epochs:.0f} s before (x{100 / epochs:g}, extrapolated)"), flush=True)


def equivalence(shadow: Features, target: Features, epochs: int, seeds: int) -> None:
    for name in LEARNED:
        scores = {"before": [], "after": []}
        for seed in range(seeds):
            spec = AttackSpec(epochs=epochs, seed=seed)
            for label, old in (("before", True), ("after", False)):
                attack = make_attack(name, num_classes=C)
                with before() if old else contextlib.nullcontext():
                    attack.fit(shadow, spec)
                m = attack_metrics(target.member, attack.score(target), attack.decide(target))
                scores[label].append((m["accuracy"], m["auc"]))
        line = []
        for label in ("before", "after"):
            arr = np.array(scores[label])
            line.append(f"{label} acc {arr[:, 0].mean():.4f}+-{arr[:, 0].std():.4f} "
                        f"auc {arr[:, 1].mean():.4f}+-{arr[:, 1].std():.4f}")
        print(f"  {name:8s} ({seeds} seeds): " + "; ".join(line), flush=True)


def profile(name: str, shadow: Features) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for label, old in (("before", True), ("after", False)):
        attack = make_attack(name, num_classes=C)
        with before() if old else contextlib.nullcontext():
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                attack.fit(shadow, AttackSpec(epochs=2))
        print(f"--- {name}, {label}, 2 epochs ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2, help="timed fits per variant (min kept)")
    p.add_argument("--paper", action="store_true", help="also time 100 epochs")
    p.add_argument("--seeds", type=int, default=5, help="seeds for the equivalence check")
    p.add_argument("--profile", choices=LEARNED, help="print a profile of this attack")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine())
    if busy_warning():
        print(busy_warning())
    shadow, target = features(4040, seed=0), features(808, seed=1)
    if args.profile:
        profile(args.profile, shadow)
        return
    print(f"seconds per fit, threads={args.threads}, n={len(shadow)}, C={C}:")
    timing(shadow, 10, args.repeat)
    if args.paper:
        timing(shadow, 100, 1)
    print("equivalence on a held-out target (balanced accuracy, AUC), epochs=10:")
    equivalence(shadow, target, 10, args.seeds)


if __name__ == "__main__":
    main()
