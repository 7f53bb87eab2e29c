"""Run one cell of the grid end to end in this process, and print its attack table.

    python -m mia_ray.cell --dataset digits --method l1_unstructured --sparsity 0.7 \\
        --knowledge full --defense ppb --strength 4

Models, features and fitted attacks are cached in ``--store`` by content key, so a
second run with other attack settings (or another knowledge setting sharing the
same models) reuses what is there.
"""

from __future__ import annotations

import argparse
import sys
import time

from mia_ray.catalog import (
    ATTACK_STACK_LIMIT,
    DATASETS,
    DEFAULT_ARCH,
    DEFENSES,
    KNOWLEDGE,
    PRUNING_METHODS,
    STACK_LIMIT,
)
from mia_ray.cli_options import add_model_args, prune_spec, train_specs
from mia_ray.data import check_available
from mia_ray.eager import compile_setting
from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.evaluation import run_cell
from mia_ray.keys import spec_default
from mia_ray.knowledge import CellSpec
from mia_ray.metrics import min_resolved_fpr
from mia_ray.resolution import resolve_arch, resolve_dataset
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec, DatasetSpec, DefenseSpec, PruneSpec
from mia_ray.store import ArtifactStore, check_writable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mia_ray.cell", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every default is the spec field's own (mia_ray.keys.spec_default), shown by --help.
    p.add_argument("--dataset", default=spec_default(DatasetSpec, "name"),
                   help=f"one of {', '.join(DATASETS)}, or a path (default %(default)s)")
    p.add_argument("--arch", default="", help="default: " + ", ".join(
                   f"{arch} ({data})" for data, arch in DEFAULT_ARCH.items()))
    p.add_argument("--seed", type=int, default=spec_default(DatasetSpec, "seed"),
                   help="default %(default)s")
    p.add_argument("--method", default=spec_default(PruneSpec, "method"),
                   help=f"one of {', '.join(PRUNING_METHODS)} (default %(default)s)")
    p.add_argument("--sparsity", type=float, default=spec_default(PruneSpec, "sparsity"),
                   help="default %(default)s")
    p.add_argument("--knowledge", default=spec_default(CellSpec, "knowledge"),
                   help=f"one of {', '.join(KNOWLEDGE)} (default %(default)s)")
    p.add_argument("--defense", default=spec_default(DefenseSpec, "name"),
                   help=f"one of {', '.join(DEFENSES)} (default %(default)s)")
    p.add_argument("--strength", type=float, default=spec_default(DefenseSpec, "strength"),
                   help="PPB lambda, AdvReg theta or DP-SGD sigma (default %(default)s)")
    p.add_argument("--clip-norm", type=float, default=spec_default(DefenseSpec, "clip_norm"),
                   help="DP-SGD clip norm (default %(default)s)")
    p.add_argument("--delta", type=float, default=spec_default(DefenseSpec, "delta"),
                   help="DP-SGD delta for epsilon (default %(default)s)")
    p.add_argument("--advreg-steps", type=int, default=spec_default(DefenseSpec, "advreg_steps"),
                   help="AdvReg: inference-model steps per classifier step (default "
                        "%(default)s)")
    p.add_argument("--store", default="store", help="artifact store (folder or URI)")
    p.add_argument("--stack-models", type=int, default=STACK_LIMIT,
                   help="most models of one cohort trained together as one vectorised "
                        "job (default %(default)s; 1 trains each alone)")
    p.add_argument("--stack-attacks", type=int, default=ATTACK_STACK_LIMIT,
                   help="1 fits each learned attack alone; more (default %(default)s) "
                        "trains the MLP attacks' networks together in one pass")
    p.add_argument("--results", default="results/cell", help="Parquet results root")
    add_model_args(p)
    return p.parse_args(argv)


def build_cell(args: argparse.Namespace) -> CellSpec:
    """Turn the options into a validated spec: every bad value fails here."""
    train, finetune = train_specs(args, args.dataset)
    # The one step that reads a dataset file or imports an architecture by reference.
    dataset = resolve_dataset(args.dataset, seed=args.seed, num_shadows=args.shadows,
                              root=args.data_root, download=args.download)
    cell = CellSpec(
        dataset=dataset,
        arch=resolve_arch(args.arch, [dataset.info]),
        knowledge=args.knowledge,
        prune=prune_spec(args.method, args.sparsity, args),
        defense=DefenseSpec(name=args.defense, strength=args.strength,
                            clip_norm=args.clip_norm, delta=args.delta,
                            advreg_steps=args.advreg_steps),
        attacks=AttackSpec(names=args.attacks, epochs=args.attack_epochs,
                           label_queries=args.label_queries),
        train=train,
        finetune=finetune,
        num_references=args.references,
    )
    dropped = [a for a in args.attacks if a not in cell.attacks.names]
    if dropped:  # a grid's original cell leaves the pair attacks out; one cell refuses
        raise SpecError("attacks", ",".join(dropped),
                        f"attacks that apply to knowledge {args.knowledge!r}: the pair "
                        "attacks need pruned shadows beside their originals")
    return cell


def format_rows(rows: list[dict]) -> str:
    """The attack table; the TPR at 0.1% FPR only where it allows one false positive."""
    n0 = min(r["n_nonmembers"] for r in rows)
    low = 0.001 >= min_resolved_fpr(n0)
    lines = [f"{'attack':<12} {'accuracy':>9} {'auc':>7} {'tpr@1%':>8}"
             + (f" {'tpr@0.1%':>9}" if low else "")]
    for r in rows:
        lines.append(f"{r['attack']:<12} {r['accuracy']:>9.3f} {r['auc']:>7.3f} "
                     f"{r['tpr_at_1pct_fpr']:>8.3f}"
                     + (f" {r['tpr_at_01pct_fpr']:>9.3f}" if low else ""))
    if not low:
        lines.append(f"(no TPR at 0.1% FPR: with {n0} non-members it allows no false "
                     "positive, so it is the TPR at zero false positives)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cell = build_cell(args)
        compile_setting()
        if not 1 <= args.stack_models <= 64:
            raise SpecError("stack_models", args.stack_models, "an integer in [1, 64]")
        if not 1 <= args.stack_attacks <= 64:
            raise SpecError("stack_attacks", args.stack_attacks, "an integer in [1, 64]")
        check_available(cell.dataset)
        check_writable(args.store)
        check_writable(args.results)
    except (SpecError, DatasetFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    trained: list[str] = []
    rows = run_cell(cell, ArtifactStore(args.store), ResultTables(args.results),
                    on_train=lambda spec: trained.append(spec.key()),
                    stack_limit=args.stack_models, stack_attacks=args.stack_attacks > 1)
    print(format_rows(rows))
    r = rows[0]
    print(f"victim: train acc {r['victim_train_acc']:.3f}, test acc {r['victim_test_acc']:.3f}, "
          f"measured sparsity {r['victim_sparsity']:.3f}")
    print(f"cell {cell.key()}: {len(trained)} models trained, "
          f"{time.perf_counter() - start:.1f} s; results in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
