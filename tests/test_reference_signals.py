"""Reference signals are stored once per (model, sample set) and reused: a second
evaluation of a cell trains nothing and runs no forward pass; growing N runs only the
new references. Counted on a real cell over a real store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mia_ray.reference_signals as signals
from mia_ray.evaluation import evaluate_cell, run_cell
from mia_ray.knowledge import CellSpec
from mia_ray.resolution import resolve_dataset
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec, TrainSpec
from mia_ray.store import ArtifactStore

ATTACKS = AttackSpec(names=("lira", "rmia", "lira_online", "rmia_online"), epochs=1)


@pytest.fixture()
def blobs(tmp_path) -> str:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = (rng.normal(size=(3, 8))[y] + rng.normal(size=(240, 8))).astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, features=x, labels=y)
    return str(path)


def _cell(blobs: str, n_refs: int) -> CellSpec:
    return CellSpec(dataset=resolve_dataset(blobs, num_shadows=2), arch="fc",
                    knowledge="original", attacks=ATTACKS, num_references=n_refs,
                    train=TrainSpec(max_epochs=2))


@pytest.fixture()
def forward_passes(monkeypatch) -> list[int]:
    """One entry per model forward pass over a sample set, its sample count."""
    calls: list[int] = []
    real = signals._probs_on

    def counted(model, x, index, device, chunk=8192):
        calls.append(len(index))
        return real(model, x, index, device, chunk)

    monkeypatch.setattr(signals, "_probs_on", counted)
    return calls


def test_a_second_evaluation_trains_nothing_and_runs_no_forward_pass(
        blobs, tmp_path, forward_passes):
    store, cpu = ArtifactStore(str(tmp_path / "store")), torch.device("cpu")
    trained: list[str] = []
    first = run_cell(_cell(blobs, 4), store, ResultTables(str(tmp_path / "a")), device=cpu,
                     on_train=lambda spec: trained.append(spec.key()))
    assert len(trained) == 1 + 2 + 4
    # 2 shadows and 4 references on the audited samples and the population, the
    # victim on the population.
    assert len(forward_passes) == 2 * 2 + 2 * 4 + 1
    assert len(store.keys(signals.SIGNALS)) == len(forward_passes)

    trained.clear()
    forward_passes.clear()
    again = run_cell(_cell(blobs, 4), store, ResultTables(str(tmp_path / "b")), device=cpu,
                     on_train=lambda spec: trained.append(spec.key()))
    assert trained == [] and forward_passes == []
    assert pd.DataFrame(again)[["attack", "auc", "tpr_at_1pct_fpr"]].equals(
        pd.DataFrame(first)[["attack", "auc", "tpr_at_1pct_fpr"]])

    # Growing to N = 8 trains and runs only references 4..7, twice each.
    grown = run_cell(_cell(blobs, 8), store, ResultTables(str(tmp_path / "c")), device=cpu,
                     on_train=lambda spec: trained.append(spec.key()))
    assert len(trained) == 4 and len(forward_passes) == 2 * 4
    assert {r["num_references"] for r in grown} == {8}


def test_stored_rows_hold_the_in_mask_of_each_reference(blobs, tmp_path, forward_passes):
    from mia_ray.data import load_pool, split_for
    from mia_ray.data.splits import inclusion

    store, cpu = ArtifactStore(str(tmp_path / "store")), torch.device("cpu")
    cell = _cell(blobs, 4)
    run_cell(cell, store, ResultTables(str(tmp_path / "a")), device=cpu)
    n = len(load_pool(cell.dataset).y)
    victim = split_for(cell.dataset, "victim", 0, n)
    audit = np.concatenate([victim.train, victim.test])
    expected = inclusion(cell.dataset, 4, n, audit)
    for i, ref in enumerate(cell.references()):
        row = store.arrays(signals.SIGNALS, signals.signals_key(ref, audit))
        np.testing.assert_array_equal(row["in_mask"], expected[i])
        assert row["prob"].shape == (len(audit), 3)
    assert (expected.sum(axis=0) == 2).all()
    forward_passes.clear()
    evaluate_cell(cell, store, ResultTables(str(tmp_path / "b")), device=cpu)
    assert forward_passes == []
