"""Why the `nn` attack sits near chance on digits: refit it under variations of the protocol.

    python -m mia_ray.cell --attacks conf,nn,nn_cls --attack-epochs 100   # fills ./store
    python bench/probe_nn_attack.py                                       # reads ./store

Refits the `nn` MLP on the pooled shadow features of that cell (digits, small CNN,
l1_unstructured 0.7, knowledge full, seed 0) and prints, per variant, the training loss
at epochs 1/10/50/100, the balanced accuracy on its own training data, and the balanced
accuracy and AUC on the victim. docs/statistics.md tabulates one run.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mia_ray.attacks.learned import MOMENTUM, WEIGHT_DECAY, mlp
from mia_ray.cell import build_cell, parse_args
from mia_ray.features import Features
from mia_ray.metrics import balanced_accuracy, roc_auc
from mia_ray.pipeline import ensure_features
from mia_ray.store import ArtifactStore


def refit(x, y, xv, yv, *, lr=1e-3, epochs=100, opt="sgd", batch=128, xavier=False):
    torch.manual_seed(0)
    net = mlp(x.shape[1])
    if xavier:
        for mod in net.modules():
            if isinstance(mod, torch.nn.Linear):
                torch.nn.init.xavier_normal_(mod.weight)
                torch.nn.init.zeros_(mod.bias)
    inputs, targets = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    optim = (torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM,
                             weight_decay=WEIGHT_DECAY) if opt == "sgd"
             else torch.optim.Adam(net.parameters(), lr=lr))
    sched = torch.optim.lr_scheduler.MultiStepLR(optim, [epochs // 2, 3 * epochs // 4], 0.1)
    shuffle = torch.Generator().manual_seed(0)
    curve = []
    for _ in range(epochs):
        net.train()
        total = 0.0
        for b in torch.randperm(len(inputs), generator=shuffle).split(batch):
            loss = F.cross_entropy(net(inputs[b]), targets[b])
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += loss.item() * len(b)
        sched.step()
        curve.append(total / len(inputs))
    net.eval()
    with torch.no_grad():
        own, victim = net(inputs), net(torch.tensor(xv, dtype=torch.float32))
    return (curve, balanced_accuracy(y.astype(bool), (own.argmax(1) == 1).numpy()),
            balanced_accuracy(yv.astype(bool), (victim.argmax(1) == 1).numpy()),
            roc_auc(yv.astype(bool), torch.softmax(victim, 1)[:, 1].numpy()))


def main() -> None:
    torch.set_num_threads(1)
    cell = build_cell(parse_args(["--attacks", "conf,nn,nn_cls", "--attack-epochs", "100"]))
    store = ArtifactStore("store")
    shadow = Features.concat([ensure_features(s, cell.attacks, store)
                              for s in cell.attack_fit().shadows])
    victim = ensure_features(cell.victim(), cell.attacks, store)
    print(f"shadow samples {len(shadow.label)}, victim samples {len(victim.label)}; mean p_y "
          f"members {shadow.true_prob[shadow.member].mean():.3f}, non-members "
          f"{shadow.true_prob[~shadow.member].mean():.3f}")
    y, yv = shadow.member.astype(np.int64), victim.member.astype(np.int64)
    logp = np.log(np.clip(shadow.prob, 1e-30, 1)), np.log(np.clip(victim.prob, 1e-30, 1))
    variants = {
        "paper (SGD lr 1e-3, default init)": (shadow.prob, y, victim.prob, yv, {}),
        "Xavier-normal init": (shadow.prob, y, victim.prob, yv, {"xavier": True}),
        "SGD lr 1e-2": (shadow.prob, y, victim.prob, yv, {"lr": 1e-2}),
        "SGD lr 1e-1": (shadow.prob, y, victim.prob, yv, {"lr": 1e-1}),
        "Adam lr 1e-3": (shadow.prob, y, victim.prob, yv, {"opt": "adam"}),
        "log-probabilities as input": (logp[0], y, logp[1], yv, {}),
        "labels swapped": (shadow.prob, 1 - y, victim.prob, 1 - yv, {}),
    }
    for name, (x, t, xv, tv, kw) in variants.items():
        curve, own, vic, auc = refit(x, t, xv, tv, **kw)
        print(f"{name:36s} loss {curve[0]:.4f} {curve[9]:.4f} {curve[49]:.4f} "
              f"{curve[-1]:.4f} | own bal. acc. {own:.3f} | victim bal. acc. {vic:.3f} "
              f"AUC {auc:.3f}")


if __name__ == "__main__":
    main()
