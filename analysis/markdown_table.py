"""Pipe tables for the report's markdown: grid coordinates print as given, measurements
with three decimals. Shared by :mod:`analysis.report` and the sections it includes."""

from __future__ import annotations

import pandas as pd

# Grid coordinates print as given (0.7, 16); measurements with three decimals.
_COORD_COLUMNS = {"sparsity", "strength", "seed", "num_shadows", "class_id"}


def cell_text(v, column: str = "") -> str:
    if isinstance(v, float):
        if pd.isna(v):
            return ""
        return f"{v:g}" if column in _COORD_COLUMNS else f"{v:.3f}"
    return str(v).replace("|", "/")


def markdown_table(df: pd.DataFrame, bold: set[tuple[int, str]] | None = None) -> str:
    """A pipe table of ``df`` (index dropped: reset it first to keep it); the cells in
    ``bold`` ((row position, column)) are set in bold."""
    bold = bold or set()
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, row in enumerate(df.itertuples(index=False)):
        cells = [cell_text(v, col) for v, col in zip(row, cols)]
        cells = [f"**{c}**" if (i, col) in bold and c else c for c, col in zip(cells, cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
