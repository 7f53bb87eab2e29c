"""Weights of the same fits under two checkouts, compared bit for bit: for refactors.

    git worktree add /tmp/old <commit>
    export MIA_RAY_COMPILE_ATTACKS=0
    (cd /tmp/old && PYTHONPATH=/tmp/old python $OLDPWD/bench/same_weights.py save /tmp/a.pt)
    python bench/same_weights.py save /tmp/b.pt
    python bench/same_weights.py compare /tmp/a.pt /tmp/b.pt

``save`` trains, on digits, three fc and three small-CNN models one by one and stacked
(6 epochs, patience 2, a checkpoint at epoch 2), a pruned fc model under PPB, and the
learned attacks (the four MLPs and SAMIA, 4 epochs) of three fits, stacked and alone,
and saves every weight, checkpoint and report; it prints its wall time, so two
checkouts' runs alternated on one machine also compare the loops' speed. ``compare``
lists the entries that are not bit-identical. Both sides of issue 29 run it: the
stacked target fit is ``stacking.fit_stacked`` before it and ``training.train`` after.
"""

import copy
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from mia_ray.attacks import Knowledge, fit_attack_sets
from mia_ray.defenses import PPBHook
from mia_ray.features import Features
from mia_ray.models import build_model
from mia_ray.pruning import prune_model
from mia_ray.specs import AttackSpec, PruneSpec, TrainSpec
from mia_ray.training import fit

C = 5
SEEDS = [11, 12, 13]


def stacked_fit(models, trains, devs, spec):
    try:  # before issue 29
        from mia_ray.stacking import fit_stacked
        return fit_stacked(models, trains, devs, spec, seeds=SEEDS, device="cpu",
                           checkpoint_epochs=(2,))
    except ImportError:
        from mia_ray.recipe import Row, target_recipe
        from mia_ray.training import train
        rows = [Row(m, t, d, s) for m, t, d, s in zip(models, trains, devs, SEEDS)]
        return train(rows, target_recipe(spec), device="cpu", checkpoint_epochs=(2,))


def shadow(n: int, seed: int) -> Features:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, C, n)
    member = rng.random(n) < 0.5
    logits = rng.normal(size=(n, C))
    logits[np.arange(n), label] += np.where(member, 3.0, 1.0)
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    sens = rng.gamma(2.0, np.where(member, 0.5, 0.8)[:, None], size=(n, C))
    return Features(prob.astype(np.float32), sens.astype(np.float32), label, member)


def save(path: str) -> None:
    start = time.perf_counter()
    out = {}
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    trains, devs = [], []
    for n in (300, 301, 301):
        idx = rng.permutation(len(y))
        trains.append((x[idx[:n]], y[idx[:n]]))
        devs.append((x[idx[n:n + 60]], y[idx[n:n + 60]]))
    spec = TrainSpec(lr=1e-3, batch_size=32, max_epochs=6, patience=2)
    for arch in ("fc", "small_cnn"):
        models = [build_model(arch, "digits", seed=100 + i) for i in range(3)]
        alone = [copy.deepcopy(m) for m in models]
        reports = [fit(m, trains[i], devs[i], spec, seed=SEEDS[i], device="cpu",
                       checkpoint_epochs=(2,)) for i, m in enumerate(alone)]
        stacked = [copy.deepcopy(m) for m in models]
        for how, ms, reps in (("alone", alone, reports),
                              ("stack", stacked, stacked_fit(stacked, trains, devs, spec))):
            for i, (m, r) in enumerate(zip(ms, reps)):
                out[f"{arch}/{how}/{i}"] = m.state_dict()
                out[f"{arch}/{how}/{i}/checkpoint"] = r.checkpoints[2]
                out[f"{arch}/{how}/{i}/report"] = (r.epochs_run, r.best_epoch, r.best_dev_acc)
    model = build_model("fc", "digits", seed=5)
    prune_model(model, PruneSpec(method="l1_unstructured", sparsity=0.5))
    fit(model, trains[0], devs[0], spec, seed=3, device="cpu", hook=PPBHook(4.0))
    out["pruned fc, ppb"] = model.state_dict()
    attacks = AttackSpec(names=("conf", "nn", "nn_top3", "nn_cls", "nn_sens_cls", "samia"),
                         epochs=4, batch_size=32, lr=0.05)
    sets = [(Knowledge(shadow=shadow(n, seed=i)), attacks, C)
            for i, n in enumerate((97, 130, 65))]
    for stack in (False, True):
        for j, fitted in enumerate(fit_attack_sets(sets, seeds=[7, 107, 207], stack=stack)):
            for name, attack in fitted.items():
                out[f"attacks/stack={stack}/{j}/{name}"] = attack.state_dict()
    torch.save(out, path)
    print(f"saved {len(out)} entries to {path} in {time.perf_counter() - start:.1f} s")


def compare(first: str, second: str) -> None:
    a = torch.load(first, weights_only=False)  # our own files, written by save()
    b = torch.load(second, weights_only=False)
    assert a.keys() == b.keys(), "the two runs saved different entries"
    differ = 0
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, dict):
            same = all(torch.equal(torch.as_tensor(va[k]), torch.as_tensor(vb[k])) for k in va)
        else:
            same = va == vb
        if not same:
            differ += 1
            print("differs:", key)
    print(f"entries not bit-identical: {differ} of {len(a)}")


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3])
