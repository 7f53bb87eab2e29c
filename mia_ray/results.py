"""Parquet result tables with explicit schemas, one file per cell (or per model build).

Tables, each a folder under the results root that ``pd.read_parquet(folder)`` reads whole:

- ``attacks``: one row per (cell, attack): balanced accuracy, ROC AUC, TPR at 1% and
  0.1% FPR, bootstrap intervals of the AUC and the TPR at 1%, the audit's member and
  non-member counts, plus the victim's accuracy and sparsity, so a row stands on its own.
- ``divergence``: one row per (cell, class): confidence gap and sensitivity gap, and
  percentiles of p_y and sens_y for members and non-members (``conf_member_q05`` ...,
  see :func:`mia_ray.metrics.quantile_columns`).
- ``roc``: one row per (cell, attack, FPR point), TPR at log-spaced FPRs.
- ``models``: one row per model build: accuracy, sparsity, epochs, seconds, device.

Every row of the first three carries the cell coordinates (``CELL_FIELDS``). A file
is named by the cell (or build) key and written atomically, so a retried cell
overwrites its own file instead of adding a second copy.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mia_ray.metrics import quantile_columns
from mia_ray.store import _exists, resolve_filesystem, write_bytes_atomic

CELL_FIELDS = [
    pa.field("cell_key", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("arch", pa.string(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("num_shadows", pa.int64(), nullable=False),
    pa.field("knowledge", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("sparsity", pa.float64(), nullable=False),
    pa.field("defense", pa.string(), nullable=False),
    pa.field("strength", pa.float64(), nullable=False),
]

_VICTIM_FIELDS = [
    pa.field("victim_key", pa.string(), nullable=False),
    pa.field("victim_train_acc", pa.float64(), nullable=False),
    pa.field("victim_test_acc", pa.float64(), nullable=False),
    pa.field("victim_sparsity", pa.float64(), nullable=False),
    # Only DP-SGD spends privacy budget; NaN elsewhere.
    pa.field("epsilon", pa.float64(), nullable=True),
    # DP-SGD victims: the epsilon this attack's scores prove at 95% (epsilon_bound).
    pa.field("epsilon_audited", pa.float64(), nullable=True),
]

# Online attacks (issue #20): the TPR at 0.01% FPR, which only an audit of 10,000+
# non-members supports, and N, the cell's reference models (0: none).
_ONLINE_FIELDS = [
    pa.field("tpr_at_001pct_fpr", pa.float64(), nullable=True),
    pa.field("num_references", pa.int64(), nullable=True),
]

_PROVENANCE = [
    pa.field("code_version", pa.string(), nullable=False),
    pa.field("finished_at", pa.timestamp("s", tz="UTC"), nullable=False),
]

SCHEMAS: dict[str, pa.Schema] = {
    "attacks": pa.schema(CELL_FIELDS + [
        pa.field("attack", pa.string(), nullable=False),
        pa.field("accuracy", pa.float64(), nullable=False),
        pa.field("auc", pa.float64(), nullable=False),
        pa.field("tpr_at_1pct_fpr", pa.float64(), nullable=False),
        pa.field("tpr_at_01pct_fpr", pa.float64(), nullable=False),
        # Percentile bootstrap over the audited samples (metrics.bootstrap_intervals);
        # nullable, so tables written before these columns existed still read.
        pa.field("auc_ci_low", pa.float64(), nullable=True),
        pa.field("auc_ci_high", pa.float64(), nullable=True),
        pa.field("tpr_at_1pct_fpr_ci_low", pa.float64(), nullable=True),
        pa.field("tpr_at_1pct_fpr_ci_high", pa.float64(), nullable=True),
        # The audit's size: a TPR at FPR below 10 / n_nonmembers is not supported.
        pa.field("n_members", pa.int64(), nullable=True),
        pa.field("n_nonmembers", pa.int64(), nullable=True),
        # Epochs of the learned attacks (AttackSpec.epochs), so a report can state them.
        pa.field("attack_epochs", pa.int64(), nullable=True),
        pa.field("attack_key", pa.string(), nullable=False),
        # CellSpec.setting(): what besides the coordinates the cell ran with, so analysis
        # tells a re-keyed cell from another experiment; null in tables written before.
        pa.field("setting", pa.string(), nullable=True),
    ] + _ONLINE_FIELDS + _VICTIM_FIELDS + _PROVENANCE),
    "divergence": pa.schema(CELL_FIELDS + [
        pa.field("class_id", pa.int64(), nullable=False),
        pa.field("conf_gap", pa.float64(), nullable=True),
        pa.field("sens_gap", pa.float64(), nullable=True),
        pa.field("n_members", pa.int64(), nullable=False),
        pa.field("n_nonmembers", pa.int64(), nullable=False),
    ] + [pa.field(name, pa.float64(), nullable=True) for name in quantile_columns()]
      + _PROVENANCE),
    "roc": pa.schema(CELL_FIELDS + [
        pa.field("attack", pa.string(), nullable=False),
        pa.field("fpr", pa.float64(), nullable=False),
        pa.field("tpr", pa.float64(), nullable=False),
    ] + _PROVENANCE),
    "models": pa.schema([
        pa.field("model_key", pa.string(), nullable=False),
        pa.field("parent_key", pa.string(), nullable=True),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("sparsity", pa.float64(), nullable=False),
        pa.field("defense", pa.string(), nullable=False),
        pa.field("strength", pa.float64(), nullable=False),
        pa.field("train_acc", pa.float64(), nullable=False),
        pa.field("dev_acc", pa.float64(), nullable=False),
        pa.field("test_acc", pa.float64(), nullable=False),
        pa.field("measured_sparsity", pa.float64(), nullable=False),
        pa.field("epochs", pa.int64(), nullable=False),
        pa.field("best_epoch", pa.int64(), nullable=False),
        pa.field("seconds", pa.float64(), nullable=False),
        # How many models one vectorised job trained with this one (1: on its own);
        # ``seconds`` is then this model's share of the job.
        pa.field("trained_together", pa.int64(), nullable=True),
        pa.field("device", pa.string(), nullable=False),
        pa.field("epsilon", pa.float64(), nullable=True),
        # Removed fraction per pruned layer, a JSON object {module name: fraction}.
        pa.field("layer_sparsity", pa.string(), nullable=True),
        # Pruning rounds behind the model: 0 unpruned, 1 one-shot, k for imp round k.
        pa.field("rounds", pa.int64(), nullable=True),
    ] + _PROVENANCE),
}

# The metric columns that must never be null in a finished table.
METRIC_COLUMNS = {
    "attacks": ["accuracy", "auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr"],
    "models": ["train_acc", "test_acc", "measured_sparsity"],
}
CELL_TABLES = ("attacks", "divergence", "roc")


def to_table(table: str, rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows -> an Arrow table with the table's schema; a missing column is an error."""
    schema = SCHEMAS[table]
    rows = list(rows)
    columns = {}
    for f in schema:
        missing = [i for i, r in enumerate(rows) if f.name not in r]
        if missing:
            raise KeyError(f"{table}: row {missing[0]} has no column {f.name!r}")
        columns[f.name] = [r[f.name] for r in rows]
    return pa.Table.from_pydict(columns, schema=schema)


class ResultTables:
    """Writes and reads the result tables under ``<root>`` (local or pyarrow URI)."""

    def __init__(self, root: str):
        self.root = root
        self.fs, self.base = resolve_filesystem(root)

    def __reduce__(self):
        return (ResultTables, (self.root,))

    def path(self, table: str, key: str) -> str:
        return posixpath.join(self.base, table, f"{key}.parquet")

    def write(self, table: str, key: str, rows: Iterable[dict[str, Any]]) -> None:
        buf = io.BytesIO()
        pq.write_table(to_table(table, rows), buf)
        write_bytes_atomic(self.fs, self.path(table, key), buf.getvalue())

    def has(self, table: str, key: str) -> bool:
        return _exists(self.fs, self.path(table, key))

    def cell_done(self, cell_key: str) -> bool:
        """A cell is done when its attacks file exists: it is written last."""
        return self.has("attacks", cell_key)

    def read(self, table: str) -> pd.DataFrame:
        """The whole table as one DataFrame (empty, with the schema's columns, if none)."""
        folder = posixpath.join(self.base, table)
        if not _exists(self.fs, folder):
            return SCHEMAS[table].empty_table().to_pandas()
        return pq.read_table(folder, filesystem=self.fs, schema=SCHEMAS[table]).to_pandas()
