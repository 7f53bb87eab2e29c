"""Audit a trained model: prune it every way you might, attack every variant.

    python -m mia_ray.audit --model model.pt --arch small_cnn --data digits.npz \\
        --members members.npy --sparsities 0.5,0.7,0.9 --storage results/audit

The model (a state_dict ``.pt`` with ``--arch``, or a TorchScript file) was trained
on the samples of ``--data`` listed in ``--members``; every other sample is a
non-member. K shadow models train on non-members only; the model is pruned at every
(method, sparsity), fine-tuned on its members (optionally under a defense), and the
original and every variant are attacked with every attack (LiRA and RMIA offline
included). Runs on the sweep engine (local Ray, or ``--address``), with its store and
resume. Writes the Parquet tables, ``audit.parquet`` (one row per variant: accuracy, the
strongest attack chosen on one half of the audited samples, its AUC and TPR@1%FPR on
the other half with bootstrap 95% intervals, and ``delta_auc``/``delta_tpr_at_1pct_fpr``
against the original with paired bootstrap 95% intervals) and ``audit.html``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

from mia_ray.audit.compare import MAX_ACCURACY_DROP
from mia_ray.audit.grid import AUDIT_KNOWLEDGE, AuditGrid
from mia_ray.audit.inputs import import_victim, load_audited, model_hash
from mia_ray.catalog import (
    ATTACKS,
    ONLINE_ATTACKS,
    PAIR_ATTACKS,
    PAPER_METHODS,
    PRUNING_METHODS,
)
from mia_ray.checks import check_prunable
from mia_ray.cli_options import (
    add_model_args,
    comma_separated,
    listed,
    rewind_epoch,
    train_specs,
)
from mia_ray.eager import compile_setting
from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.grid import GridSpec
from mia_ray.keys import spec_default
from mia_ray.resolution import resolve_dataset, resolve_members
from mia_ray.specs import AttackSpec, DatasetSpec
from mia_ray.store import ArtifactStore, check_writable

# Where the audit deliberately differs from the specs' defaults, and why; every other
# option's default is the spec field's own (mia_ray.keys.spec_default).
AUDIT_SHADOWS = 4
"""K: 4 shadows, not DatasetSpec's 5. Chosen when the audit was written (no measurement
is recorded for it); kept so that rerunning a stored audit finds its cells, whose keys
hold K."""
AUDIT_DEFENSES = ("none",)
AUDIT_STRENGTHS = (0.0,)
"""No defense unless asked for (docs/audit.md): the audit measures what pruning the
user's model does, where a grid (PPB at GridSpec's strengths) studies the paper's defense."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mia_ray.audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="state_dict .pt (with --arch, or of a built-in architecture) or "
                        "TorchScript file")
    p.add_argument("--data", required=True,
                   help="dataset: a built-in name or a path (.npz, .csv, .parquet, image "
                        "folder; docs/datasets.md)")
    p.add_argument("--members", required=True,
                   help=".npy of the model's training-sample indices, or a boolean mask")
    p.add_argument("--arch", default="", help="built-in name or package.module:function; "
                   "default: the built-in architecture the weights fit")
    p.add_argument("--label-column", default=spec_default(DatasetSpec, "label_column"),
                   help="CSV/Parquet label column (default %(default)s)")
    p.add_argument("--methods", type=comma_separated(), default=None,
                   help=f"any of {', '.join(PRUNING_METHODS)}; default: those of "
                        f"{', '.join(PAPER_METHODS)} that apply")
    sparsities, seeds = spec_default(GridSpec, "sparsities"), spec_default(GridSpec, "seeds")
    p.add_argument("--sparsities", type=comma_separated(float), default=sparsities,
                   help=f"default {listed(sparsities)}")
    p.add_argument("--defenses", type=comma_separated(), default=AUDIT_DEFENSES,
                   help=f"default {listed(AUDIT_DEFENSES)}")
    p.add_argument("--strengths", type=comma_separated(float), default=AUDIT_STRENGTHS,
                   help=f"default {listed(AUDIT_STRENGTHS)}")
    p.add_argument("--seeds", type=comma_separated(int), default=seeds,
                   help=f"seeds of the non-member shuffle and the shadows (default "
                        f"{listed(seeds)})")
    p.add_argument("--storage", default="results/audit", help="results and artifacts root")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster; default: the one running on this node, "
                        "else a local one")
    p.add_argument("--in-process", action="store_true",
                   help="run every cell in this process, without Ray")
    p.add_argument("--max-accuracy-drop", type=float, default=MAX_ACCURACY_DROP,
                   help="accuracy points a variant may lose for the answer to consider it "
                        "(default %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="check every input and print the plan; train nothing, write nothing")
    add_model_args(p)
    p.set_defaults(attacks=None, shadows=AUDIT_SHADOWS)
    return p.parse_args(argv)


def build_grid(args: argparse.Namespace) -> tuple[AuditGrid, object]:
    """Check every input and plan the audit: all bad input fails here, before any work."""
    # The one step that reads the data, the member file and the user's architecture.
    plain = resolve_dataset(args.data, label_column=args.label_column, root=args.data_root)
    audited = resolve_members(plain, args.members)
    model, arch = load_audited(args.model, args.arch, plain)
    methods = args.methods
    if methods is None:
        methods = []
        for m in PAPER_METHODS:  # the others on request (docs/method.md)
            try:
                check_prunable(arch, m, plain.info)
                methods.append(m)
            except SpecError:
                continue
    for m in methods:  # one message for a method this model has nothing for
        if m not in PRUNING_METHODS:
            raise SpecError("methods", m, PRUNING_METHODS)
        check_prunable(arch, m, plain.info)
    rewind = rewind_epoch(args)
    train, finetune = train_specs(args, args.data)
    compile_setting()
    grid = AuditGrid(
        datasets=(args.data,), archs=(arch,), seeds=tuple(args.seeds), methods=tuple(methods),
        sparsities=tuple(args.sparsities), knowledge=AUDIT_KNOWLEDGE,
        defenses=tuple(args.defenses), strengths=tuple(args.strengths),
        num_shadows=args.shadows, imp_rounds=args.imp_rounds,
        rewind_epoch=rewind, attacks=AttackSpec(names=_attacks(args),
                                                     epochs=args.attack_epochs,
                                                     label_queries=args.label_queries),
        num_references=args.references,
        train=train, finetune=finetune, data_root=args.data_root,
        resolved=((args.data, plain),) if plain.path else (), label_column=args.label_column,
        members=audited.members, members_path=audited.members_path,
        member_indices=audited.member_indices, audited=model_hash(args.model))
    return grid, model


def _attacks(args: argparse.Namespace) -> tuple[str, ...]:
    """--attacks, or by default every attack (the online ones only with --references).

    The pair attacks are asked for by name only: they audit a variant published beside
    the original, where the default audits each variant deployed instead of it."""
    if args.attacks is not None:
        return tuple(args.attacks)
    return tuple(a for a in ATTACKS if (args.references or a not in ONLINE_ATTACKS)
                 and a not in PAIR_ATTACKS)


def summarise(grid: AuditGrid, storage: str) -> pd.DataFrame:
    """One row per audited variant: accuracy, the strongest attack (chosen on one half of
    the audited samples), its AUC and TPR@1%FPR on the other half with 95% intervals,
    and the change against the original with paired 95% intervals (``compare``)."""
    from mia_ray.audit.compare import halves, measure, paired_delta, strongest
    from mia_ray.audit.scores import attack_scores
    from mia_ray.results import ResultTables

    store = ArtifactStore(f"{storage}/artifacts")
    attacks = ResultTables(storage).read("attacks")
    # The original of each seed first: every variant of that seed is compared with it.
    cells = sorted(grid.cells(), key=lambda c: c.knowledge != "original")
    base: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for cell in cells:
        mine = attacks[attacks.cell_key == cell.key()]
        if mine.empty:
            continue
        seed = cell.dataset.seed
        scores = {}
        for name in mine.attack:
            member, scores[name] = attack_scores(cell, name, store)
        select = halves(member, seed)
        attack = strongest(member, scores, select)
        report = ~select
        member_r, score_r = member[report], scores[attack][report]
        if cell.knowledge == "original":
            base[seed] = (member, score_r)
        elif seed not in base or not np.array_equal(base[seed][0], member):
            raise RuntimeError(f"variant {cell.key()} was not attacked on the original's "
                               "audited samples; the deltas would not be paired")
        top = mine.iloc[0]
        rows.append({**cell.coordinates(), "attack": attack,
                     "test_acc": float(top.victim_test_acc),
                     "train_acc": float(top.victim_train_acc),
                     **measure(member_r, score_r, seed=seed),
                     **paired_delta(member_r, base[seed][1], score_r, seed=seed),
                     "n_audited": int(report.sum()), "n_selection": int(select.sum())})
    return pd.DataFrame(rows)


def run(grid: AuditGrid, model, storage: str, *, address: str | None,
        in_process: bool) -> list[str]:
    """Import the model, run every cell; returns error lines (empty when all ran)."""
    from mia_ray.results import ResultTables

    store, results = ArtifactStore(f"{storage}/artifacts"), ResultTables(storage)
    for cell in grid.original_cells():
        import_victim(cell.victim(), model, store, results, rewind_epoch=grid.rewind_epoch)
    if in_process:
        from mia_ray.evaluation import run_cell

        for cell in grid.cells():
            if not results.cell_done(cell.key()):
                run_cell(cell, store, results)
        return []
    from mia_ray.engine.sweep import run_sweep

    outcome = run_sweep(grid, storage, address=address)
    return outcome.errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        grid, model = build_grid(args)
        if not args.dry_run:
            check_writable(args.storage)
    except (SpecError, DatasetFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    storage = args.storage if "://" in args.storage else os.path.abspath(args.storage)
    start = time.perf_counter()
    print(f"audit: {len(grid.cells())} cells ({len(grid.methods)} methods x "
          f"{len(grid.sparsities)} sparsities, K={grid.num_shadows} shadows) into {storage}",
          flush=True)
    if args.dry_run:
        from mia_ray.engine.cli import describe_plan
        from mia_ray.planner import plan

        print(describe_plan(plan(grid)))
        return 0
    errors = run(grid, model, storage, address=args.address, in_process=args.in_process)
    if errors:
        print(f"{len(errors)} cells failed; rerun the same command to retry them:",
              file=sys.stderr)
        for err in errors[:5]:
            print("  " + err.splitlines()[-1][:300], file=sys.stderr)
        return 1
    summary = summarise(grid, storage)
    from analysis.audit_page import answer, variants, write_audit_page

    summary.to_parquet(f"{storage}/audit.parquet", index=False)
    dataset = grid.cells()[0].dataset
    page = write_audit_page(
        summary, storage, title=f"Audit of {os.path.basename(args.model)} on {dataset.name}",
        max_drop=args.max_accuracy_drop,
        notes=[f"{int(summary.n_audited.iloc[0] + summary.n_selection.iloc[0])} audited "
               "samples (members and as many held-out non-members): the strongest attack "
               f"is chosen on {int(summary.n_selection.iloc[0])} of them, every number is "
               f"measured on the other {int(summary.n_audited.iloc[0])}. "
               f"K={grid.num_shadows} shadow models, attacks: {', '.join(grid.attacks.names)}."])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary[["method", "sparsity", "defense", "strength", "test_acc", "attack",
                       "auc", "auc_lo", "auc_hi", "delta_auc", "delta_auc_lo",
                       "delta_auc_hi"]].round(3))
    print(answer(variants(summary), args.max_accuracy_drop))
    print(f"{page} ({time.perf_counter() - start:.0f} s)")
    return 0
