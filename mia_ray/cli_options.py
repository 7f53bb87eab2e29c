"""The command-line options the cell, the sweeps and the audit share, and the argparse
types they use. Every default here is read from the spec field that owns it
(:func:`spec_default`), so a changed default reaches every command's ``--help`` and
parsed spec at once."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from mia_ray.catalog import ATTACKS, IMP_ROUNDS
from mia_ray.checks import check_int
from mia_ray.info import AUTHORS_EPOCHS
from mia_ray.keys import spec_default
from mia_ray.knowledge import CellSpec
from mia_ray.specs import AttackSpec, DatasetSpec, PruneSpec, TrainSpec, epoch_budgets


def comma_separated(cast: Callable = str) -> Callable[[str], tuple]:
    """An argparse type: 'a,b,c' -> a tuple, each value through ``cast``."""
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(t.strip()) for t in text.split(",") if t.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc
    return parse


def listed(values: tuple) -> str:
    """A default list as the user types it: (0.5, 0.7) -> '0.5,0.7'."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def csv_names(text: str) -> tuple[str, ...]:
    """An argparse type: 'a, b,c' -> ('a', 'b', 'c')."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by the single-cell command and the sweeps."""
    p.add_argument("--data-root", default=spec_default(DatasetSpec, "root"),
                   help="folder with dataset files (default %(default)s)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download CIFAR/SVHN into --data-root")
    p.add_argument("--shadows", type=int, default=spec_default(DatasetSpec, "num_shadows"),
                   help="K, the number of shadow models (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="max epochs, original models (default: the authors' budget, "
                        f"{AUTHORS_EPOCHS['image']} on images, {AUTHORS_EPOCHS['tabular']} on "
                        "tabular sets; a dataset by path: "
                        f"{spec_default(TrainSpec, 'max_epochs')})")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="max epochs, fine-tuning (default: half of --epochs, rounded down, "
                        "at least 1)")
    p.add_argument("--patience", type=int, default=spec_default(TrainSpec, "patience"),
                   help="early-stopping patience (default %(default)s)")
    p.add_argument("--attacks", type=csv_names, default=spec_default(AttackSpec, "names"),
                   help=f"comma-separated; known: {', '.join(ATTACKS)}")
    p.add_argument("--attack-epochs", type=int, default=spec_default(AttackSpec, "epochs"),
                   help="epochs of every learned attack (default %(default)s, the paper's; "
                        "fewer is faster and weaker)")
    p.add_argument("--label-queries", type=int, default=spec_default(AttackSpec, "label_queries"),
                   help="M, the perturbed queries per sample of the label_only attack "
                        "(default %(default)s; docs/method.md, \"Label-only\")")
    p.add_argument("--references", type=int, default=spec_default(CellSpec, "num_references"),
                   help="N reference models of the online attacks lira_online and "
                        "rmia_online (even, at most 256; default %(default)s = none; only "
                        "with one of them in --attacks), each trained on a random half of "
                        "the audited samples, as many as the victim")
    add_imp_args(p, rounds_default=IMP_ROUNDS)


def add_imp_args(p: argparse.ArgumentParser, rounds_default: int | None) -> None:
    """``--imp-rounds`` and ``--rewind-epoch`` (the cell, the audit and the sweeps)."""
    p.add_argument("--imp-rounds", type=int, default=rounds_default,
                   help=f"imp: rounds that reach sparsity 0.9, each removing the same "
                        f"fraction of what is left (default {IMP_ROUNDS}; docs/method.md)")
    p.add_argument("--rewind-epoch", type=int, default=None,
                   help="imp: the original training's epoch each round rewinds to "
                        "(default: the training budget / 20, at least 1)")


def prune_spec(method: str, sparsity: float, args: argparse.Namespace) -> PruneSpec:
    """The cell's pruning; ``imp`` takes its rounds and rewind epoch from the options."""
    check_int("imp_rounds", args.imp_rounds, 1, 64)
    rewind = rewind_epoch(args)
    if method != "imp":
        return PruneSpec(method=method, sparsity=sparsity)
    return PruneSpec(method=method, sparsity=sparsity, rounds=args.imp_rounds,
                     rewind_epoch=rewind)


def rewind_epoch(args: argparse.Namespace) -> int:
    """``--rewind-epoch``, checked: at least 1 when given, else 0 (the specs' "default")."""
    if args.rewind_epoch is None:
        return 0
    check_int("rewind_epoch", args.rewind_epoch, 1)
    return args.rewind_epoch


def train_specs(args: argparse.Namespace, dataset: str) -> tuple[TrainSpec, TrainSpec]:
    """(train, finetune) specs: ``dataset``'s reference budgets unless the user set them,
    by the grid's rule (:func:`~mia_ray.specs.epoch_budgets`)."""
    base = TrainSpec(patience=args.patience)
    if args.epochs is not None:
        base = dataclasses.replace(base, max_epochs=args.epochs)
    train, finetune = epoch_budgets(dataset, base, per_dataset=args.epochs is None)
    if args.finetune_epochs is not None:
        finetune = dataclasses.replace(finetune, max_epochs=args.finetune_epochs)
    return train, finetune
