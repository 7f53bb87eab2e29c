"""What every command makes of its defaults, as JSON: run in a copy of the code whose
defaults a test edited (tests/test_defaults.py), from that copy's root.

    python tests/defaults_probe.py DATASET_FILE

For each command (the cell, the audit, the sweep CLI on GridSpec's own grid, and the
scripts in sweeps/ with their smoke grids) it prints the K, attack epochs and epoch
budgets its first cell gets, on a built-in dataset and on ``DATASET_FILE`` (a dataset
by path, which has no reference budget), and each command's ``--help`` text.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys

from mia_ray.audit.cli import parse_args as audit_args
from mia_ray.cell import build_cell
from mia_ray.cell import parse_args as cell_args
from mia_ray.cli_options import train_specs
from mia_ray.engine.cli import add_sweep_args, apply_overrides
from mia_ray.grid import GridSpec

AUDIT = ["--model", "model.pt", "--data", "digits", "--members", "members.npy"]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, f"sweeps/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settings(cell) -> dict:
    return {"shadows": cell.dataset.num_shadows, "attack_epochs": cell.attacks.epochs,
            "train": cell.train.max_epochs, "finetune": cell.finetune.max_epochs}


def sweep(grid: GridSpec, *argv: str) -> dict:
    """The first cell of ``grid`` as the sweep CLI builds it with ``argv``'s cuts."""
    p = argparse.ArgumentParser()
    add_sweep_args(p, storage="results")
    return settings(apply_overrides(grid, p.parse_args(list(argv))).cells()[0])


def help_text(parse, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parse([*argv, "--help"])
    return out.getvalue()


def sweep_help() -> str:
    p = argparse.ArgumentParser(prog="sweep")
    add_sweep_args(p, storage="results")
    return p.format_help()


def main(data: str) -> dict:
    small, full = script("small_grid"), script("full_grid")
    audit = audit_args(AUDIT)
    train, finetune = train_specs(audit, "digits")
    one_arch = ("--archs", "fc")  # a dataset by path is tabular here: fc fits it
    return {
        "cell": settings(build_cell(cell_args([]))),
        "cell by path": settings(build_cell(cell_args(["--dataset", data]))),
        "audit": {"shadows": audit.shadows, "attack_epochs": audit.attack_epochs,
                  "train": train.max_epochs, "finetune": finetune.max_epochs},
        "grid": sweep(GridSpec()),
        "grid by path": sweep(GridSpec(), "--datasets", data, *one_arch),
        "small_grid": sweep(small.small_grid()),
        "small_grid smoke": sweep(small.smoke_grid()),
        "full_grid": sweep(full.full_grid(), "--datasets", "cifar10", "--archs", "resnet18"),
        "full_grid by path": sweep(full.full_grid(), "--datasets", data, *one_arch),
        "full_grid smoke": sweep(full.smoke_grid()),
        "help": {"cell": help_text(cell_args, []), "audit": help_text(audit_args, AUDIT),
                 "sweep": sweep_help()},
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1]), sys.stdout)
