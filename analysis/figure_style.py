"""What every report figure shares: sizes, labels, colours, captions' number format, saving.

Kept apart from the figures themselves (``figures.py``, ``distributions.py``) so that
each figure module draws and this one decides how a figure looks and where it goes.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.load import groups
from mia_ray.catalog import PRUNING_METHODS

DPI = 90
METRIC_LABELS = {"accuracy": "balanced attack accuracy", "auc": "ROC AUC",
                 "tpr_at_1pct_fpr": "TPR at 1% FPR", "tpr_at_01pct_fpr": "TPR at 0.1% FPR"}
HIGHLIGHT = "tab:red"
# The default cycle without red, which marks SAMIA and the best cells.
METHOD_PALETTE = ["C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9", "C7"]

FigureResult = tuple[Path, str] | None


def method_color(method: str) -> str:
    """The same colour for a method in every figure."""
    known = list(PRUNING_METHODS)
    # crc32, not hash(): str hashes change between processes.
    i = known.index(method) if method in known else len(known) + zlib.crc32(method.encode()) % 5
    return METHOD_PALETTE[i % len(METHOD_PALETTE)]


def group_tag(df: pd.DataFrame) -> str:
    """A file-name tag: ``dataset_arch`` for one group, else ``all``."""
    names = [f"{d}_{a}" for d, a in groups(df)]
    return names[0] if len(names) == 1 else "all"


def group_label(df: pd.DataFrame) -> str:
    """A title's words for the (dataset, arch) groups a frame holds."""
    pairs = groups(df)
    return " / ".join(pairs[0]) if len(pairs) == 1 else f"{len(pairs)} dataset/arch groups"


def save_figure(fig: Figure, out_dir: Path, name: str, data: pd.DataFrame) -> Path:
    """Write ``<name>.png`` and the numbers it draws as ``<name>.csv``; return the PNG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    data.to_csv(path.with_suffix(".csv"), index=False)
    return path


def fmt3(v: float) -> str:
    """Three decimals for a caption, ``n/a`` for a missing value."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def unique_legend(fig: Figure, axes, ncols: int = 6, loc: str = "outside lower center") -> None:
    """One legend for the figure, each label once, from all ``axes``."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc=loc,
               ncols=min(ncols, len(seen)), fontsize="small")
