"""A demo to audit (the library never imports it): digits as an npz, a member set,
and a small CNN that memorised those members (a model that leaks).

    python -m mia_ray.audit.demo audit_demo
    python -m mia_ray.audit --model audit_demo/model.pt --data audit_demo/digits.npz \\
        --members audit_demo/members.npy --storage audit_demo/results

Writes ``digits.npz`` (scikit-learn's 1797 digits as 8x8 uint8 images and labels),
``members.npy`` (300 random sample indices) and ``model.pt`` (the state_dict of the
built-in ``small_cnn`` trained 30 epochs on the members only).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from mia_ray.data import load_pool
from mia_ray.models import build_model
from mia_ray.recipe import Recipe, Row
from mia_ray.resolution import resolve_dataset
from mia_ray.specs import DatasetSpec
from mia_ray.training import train


def train_overfit(data: DatasetSpec, members: np.ndarray, path: Path | str, *,
                  arch: str = "small_cnn", epochs: int = 30) -> None:
    """Fit ``arch`` (the built-in small CNN by default) to ``members`` for ``epochs`` until
    it memorises them, and save its state_dict to ``path``: a model that leaks."""
    pool = load_pool(data)
    model = build_model(arch, data, seed=1)
    # Adam at 1e-3, batches of 32, every epoch run: the one training loop, no early stopping.
    train([Row(model, (pool.x[members], pool.y[members]), seed=0)],
          Recipe("adam", 1e-3, 32, epochs), device="cpu")
    torch.save(model.state_dict(), path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mia_ray.audit.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default="audit_demo", help="folder to write into")
    p.add_argument("--epochs", type=int, default=30,
                   help="training epochs of the demo model (fewer leaks less)")
    args = p.parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    np.savez(root / "digits.npz", features=(x.reshape(-1, 8, 8) * 16).clip(0, 255)
             .astype(np.uint8), labels=y)
    members = np.sort(np.random.default_rng(0).choice(len(y), 300, replace=False))
    np.save(root / "members.npy", members)
    train_overfit(resolve_dataset(str(root / "digits.npz")), members, root / "model.pt",
                  epochs=args.epochs)
    print(f"wrote {root}/digits.npz, members.npy, model.pt")


if __name__ == "__main__":
    main()
