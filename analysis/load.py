"""The result tables as pandas frames, and the pivots the paper reports them in.

Every function here is a pure function of frames read by :func:`load_results`; none
plots or writes. Conventions the pivots rely on (see ``mia_ray.knowledge``):

- A cell with knowledge ``original`` is the unpruned reference: method ``none``,
  sparsity 0, defense ``none``.
- A victim is *undefended* when its defense is ``none`` or PPB/AdvReg at strength 0
  (plain fine-tuning); DP-SGD always adds noise, so it is never undefended.
- Means are taken over whatever the caller did not select (seeds, and sparsities or
  methods where a pivot says so); call the pivots once per (dataset, arch) group when
  a results folder holds several.
"""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mia_ray.catalog import ATTACKS, BASELINE_ATTACKS, KNOWLEDGE
from mia_ray.checks import check_prunable
from mia_ray.errors import SpecError
from mia_ray.results import CELL_FIELDS, CELL_TABLES, ResultTables
from mia_ray.specs import PruneSpec

TABLES = ("attacks", "divergence", "roc", "models")
COORDS = [f.name for f in CELL_FIELDS if f.name != "cell_key"]
"""The grid coordinates of a cell, without its key."""
UNIT = ["dataset", "arch", "seed", "method", "sparsity"]
"""What identifies one pruned victim up to its defense."""
PROPOSED = "samia"


@dataclass(frozen=True)
class Results:
    """One tidy frame per result table; a table never written is an empty frame."""

    attacks: pd.DataFrame
    divergence: pd.DataFrame
    roc: pd.DataFrame
    models: pd.DataFrame
    root: str = ""

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    def n_cells(self) -> int:
        """Distinct cells in any of the cell tables."""
        keys = set()
        for t in CELL_TABLES:
            keys.update(self.table(t)["cell_key"].unique())
        return len(keys)


def load_results(results_dir: str | Path) -> Results:
    """Read every table under ``results_dir`` (a local folder or a pyarrow URI).

    A grid point evaluated again under a new cell key (a newer release whose keys
    changed, e.g. when the attacks' seeding did) leaves the older cell's files beside
    the new ones; only the newest cell of each grid point is kept, with a warning, so
    no point is counted twice. A folder that holds two different experiments of one
    (dataset, arch, method), say attacks trained for 10 and for 100 epochs, is refused
    by :func:`check_one_setting` with a :class:`~mia_ray.errors.SpecError` that names
    the setting: keeping the newest would drop the other run from every table.
    """
    writer = ResultTables(str(results_dir))
    tables = {t: writer.read(t) for t in TABLES}
    stale = superseded_cells(tables["attacks"])
    if stale:
        warnings.warn(f"{len(stale)} cell(s) in {results_dir} were evaluated again later at "
                      "the same grid point and setting under a new key; the older rows are "
                      "left out", stacklevel=2)
        for t in ("attacks", "divergence", "roc"):
            tables[t] = tables[t][~tables[t]["cell_key"].isin(stale)].reset_index(drop=True)
    return Results(**tables, root=str(results_dir))


SETTING_GROUP = ["dataset", "arch", "method"]
"""Within these, every cell of one experiment has one setting (budgets differ between
datasets with ``epochs_per_dataset``, imp's rounds between methods)."""
APART = ("num_references",)
"""Settings kept apart as columns, never refused: the online report groups by N."""


def _cell_settings(attacks: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: coordinates, finish time, and its settings: the attack list,
    the attack epochs and the recorded ``setting`` (JSON, or null in older tables)."""
    extra = [c for c in ("num_references", "attack_epochs", "setting") if c in attacks.columns]
    cells = attacks.groupby("cell_key", sort=False).agg(
        finished=("finished_at", "max"), attack_list=("attack", lambda a: ",".join(sorted(a))),
        **{c: (c, "first") for c in COORDS + extra})
    return cells


def _flat(setting: str | None) -> dict[str, object]:
    """A recorded setting as {"train.max_epochs": 100, ...}, less the ``APART`` fields."""
    if not isinstance(setting, str):
        return {}
    out: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = json.dumps(value)

    walk("", json.loads(setting))
    return {k: v for k, v in out.items() if k not in APART}


def check_one_setting(attacks: pd.DataFrame) -> None:
    """Refuse a results folder whose cells of one (dataset, arch, method) ran with
    different settings (attack list, attack epochs, training budgets, imp's rewind
    epoch ...: any field of ``CellSpec.setting`` but N references), naming the first
    that differs. Null records (tables written before a column existed) match any."""
    if attacks.empty:
        return
    cells = _cell_settings(attacks)
    for group, g in cells.groupby(SETTING_GROUP, sort=True):
        found: dict[str, set] = {"attacks": set(g["attack_list"])}
        if "attack_epochs" in g.columns:
            found["attack_epochs"] = {int(e) for e in g["attack_epochs"].dropna()}
        flat = [_flat(v) for v in g.get("setting", pd.Series(dtype=object))]
        for name in sorted({k for f in flat for k in f}):
            found[name] = {f[name] for f in flat if name in f}  # JSON text: hashable
        for name, values in found.items():
            if len(values) > 1:
                shown = sorted((json.loads(v) if name not in ("attacks", "attack_epochs")
                                else v for v in values), key=str)
                raise SpecError(name, shown, "one value per dataset, arch and method in a "
                                f"results folder, but {' / '.join(map(str, group))} has "
                                f"cells of each: two experiments, which analysing together "
                                "would mix or drop; report each run from its own --storage")


def superseded_cells(attacks: pd.DataFrame) -> set[str]:
    """Cell keys of the attacks table that a later cell of the same experiment replaces:
    the same grid point (coordinates and N references) and setting
    (:func:`check_one_setting` refuses two settings first), evaluated again under a
    newer key version or seeding."""
    if attacks.empty:
        return set()
    check_one_setting(attacks)
    cells = _cell_settings(attacks)
    point = COORDS + [c for c in APART if c in cells.columns]
    newest = cells.sort_values("finished").groupby(point, dropna=False).tail(1).index
    return set(cells.index) - set(newest)


def paired_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of cells whose grid point is present at every seed of its (dataset,
    arch): the paired design the claims are tested on. A cell run at fewer seeds (the
    full grid's breadth, at seed 0 only) would make one seed's mean average over other
    cells than the next seed's; such cells feed the figures and tables only."""
    if frame.empty:
        return frame
    point = [c for c in COORDS if c != "seed"]
    at_point = frame.groupby(point, dropna=False)["seed"].transform("nunique")
    in_group = frame.groupby(["dataset", "arch"])["seed"].transform("nunique")
    return frame[at_point == in_group]


def order_attacks(names) -> list[str]:
    """Baselines first in the paper's order, then SAMIA, then any extra attack."""
    known = [a for a in ATTACKS if a in set(names)]
    return known + sorted(set(names) - set(known))


def order_knowledge(names) -> list[str]:
    return [k for k in KNOWLEDGE if k in set(names)] + sorted(set(names) - set(KNOWLEDGE))


def undefended_mask(df: pd.DataFrame) -> pd.Series:
    return (df["defense"] == "none") | ((df["defense"] != "dpsgd") & (df["strength"] == 0))


def select(df: pd.DataFrame, *, knowledge: str | None = None, pruned: bool | None = None,
           defended: bool | None = None) -> pd.DataFrame:
    """Rows of a cell table by knowledge setting, pruned or not, defended or not."""
    mask = pd.Series(True, index=df.index)
    if knowledge is not None:
        mask &= df["knowledge"] == knowledge
    if pruned is not None:
        mask &= (df["method"] != "none") == pruned
    if defended is not None:
        mask &= undefended_mask(df) != defended
    return df[mask]


def original_reference(attacks: pd.DataFrame, metric: str = "accuracy") -> pd.Series:
    """Per attack, the mean metric over the original (unpruned) cells."""
    orig = select(attacks, knowledge="original")
    s = orig.groupby("attack")[metric].mean()
    return s.reindex(order_attacks(s.index))


def attack_vs_sparsity(attacks: pd.DataFrame, metric: str = "accuracy", *,
                       knowledge: str = "full") -> dict[str, pd.DataFrame]:
    """Per pruning method, a frame with rows sparsity and columns attack.

    Undefended pruned victims only; each value is the mean over seeds.
    """
    df = select(attacks, knowledge=knowledge, pruned=True, defended=False)
    out = {}
    for method, g in df.groupby("method", sort=True):
        t = g.pivot_table(index="sparsity", columns="attack", values=metric, aggfunc="mean")
        out[method] = t[order_attacks(t.columns)]
    return out


def strongest_per_cell(attacks: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One row per cell: its coordinates, victim columns, and the best attack's metric.

    A defense has to hold against the best adversary, so defense and leakage
    comparisons use the strongest attack of each cell rather than one fixed attack.
    """
    if attacks.empty:
        return attacks.assign(best_attack=pd.Series(dtype=str))
    idx = attacks.groupby("cell_key")[metric].idxmax()
    best = attacks.loc[idx].rename(columns={"attack": "best_attack"})
    return best.reset_index(drop=True)


SELECTION_GROUP = ["dataset", "arch", "knowledge", "defense", "strength"]
"""The cells whose other seeds choose a cell's strongest attack in
:func:`strongest_on_other_seeds`: same dataset, arch, adversary and defense point,
pooled over methods and sparsities."""


def strongest_on_other_seeds(attacks: pd.DataFrame, metric: str = "accuracy"
                             ) -> pd.DataFrame:
    """One row per cell, like :func:`strongest_per_cell`, but the attack of a cell of
    seed s is the one with the highest mean ``metric`` on the OTHER seeds' cells of its
    ``SELECTION_GROUP`` (each seed weighted once), among the attacks the cell has.

    The maximum over a cell's own attacks is lifted by that cell's noise, which biases
    any difference it enters; choosing on the other seeds keeps the cell's value an
    unbiased measurement of an attack fixed in advance. A group with one seed has no
    other seed: its cells keep their own best attack."""
    if attacks.empty:
        return attacks.assign(best_attack=pd.Series(dtype=str))
    per_seed = attacks.groupby(SELECTION_GROUP + ["seed", "attack"])[metric].mean()
    total = per_seed.groupby(level=SELECTION_GROUP + ["attack"]).agg(["sum", "count"])
    own = per_seed.rename("own").reset_index()
    own = own.merge(total.reset_index(), on=SELECTION_GROUP + ["attack"])
    others = (own["sum"] - own["own"]) / (own["count"] - 1).where(own["count"] > 1)
    score = own.assign(score=others)[SELECTION_GROUP + ["seed", "attack", "score"]]
    scored = attacks.merge(score, on=SELECTION_GROUP + ["seed", "attack"], how="left")
    # One seed in the group: no score; the cell's own metric ranks its attacks.
    lone = scored.groupby("cell_key")["score"].transform(lambda x: x.isna().all())
    scored.loc[lone, "score"] = scored.loc[lone, metric]
    idx = scored.groupby("cell_key")["score"].idxmax()
    best = scored.loc[idx].drop(columns="score").rename(columns={"attack": "best_attack"})
    return best.reset_index(drop=True)


def method_vs_knowledge(attacks: pd.DataFrame, attack: str = PROPOSED,
                        metric: str = "accuracy", *, defended: bool = False) -> pd.DataFrame:
    """Rows method, columns knowledge setting (original excluded): one attack's mean
    metric over sparsities and seeds, for undefended (or defended) pruned victims."""
    df = select(attacks[attacks["attack"] == attack], pruned=True, defended=defended)
    if df.empty:
        return pd.DataFrame()
    t = df.pivot_table(index="method", columns="knowledge", values=metric, aggfunc="mean")
    return t[order_knowledge(t.columns)]


def samia_vs_baselines(attacks: pd.DataFrame, metric: str = "accuracy", *,
                       knowledge: str = "full") -> pd.DataFrame:
    """The paper's comparison table: rows (dataset, arch, method), columns attacks.

    Undefended pruned victims; each value is the mean over sparsities and seeds. The
    last column, ``best``, names the attack with the highest value in the row.
    """
    df = select(attacks, knowledge=knowledge, pruned=True, defended=False)
    if df.empty:
        return pd.DataFrame()
    t = df.pivot_table(index=["dataset", "arch", "method"], columns="attack",
                       values=metric, aggfunc="mean")
    t = t[order_attacks(t.columns)]
    t.columns.name = None
    return t.assign(best=t.idxmax(axis=1))


def baseline_columns(columns) -> list[str]:
    return [c for c in columns if c in BASELINE_ATTACKS]


def strongest_with_strength(attacks: pd.DataFrame, defense: str = "ppb") -> pd.DataFrame:
    """The cells :func:`defense_tradeoff` averages: strongest attack per cell, knowledge
    full, pruned victims with ``defense`` or undefended, undefended counted as strength 0."""
    df = select(attacks, knowledge="full", pruned=True)
    best = strongest_per_cell(df[(df["defense"] == defense) | undefended_mask(df)])
    return best.assign(strength=best["strength"].where(best["defense"] == defense, 0.0))


def defense_tradeoff(attacks: pd.DataFrame, defense: str = "ppb", *,
                     by: tuple[str, ...] = ("method", "strength")) -> pd.DataFrame:
    """Rows ``by`` (method, strength): victim test accuracy and strongest attack accuracy.

    Knowledge full (the attacker knows the defense); undefended victims count as
    strength 0. Means over sparsities and seeds; ``n_cells`` says how many cells.
    """
    best = strongest_with_strength(attacks, defense)
    if best.empty:
        return pd.DataFrame(columns=["victim_test_acc", "attack_accuracy", "n_cells"])
    g = best.groupby(list(by))
    return pd.DataFrame({"victim_test_acc": g["victim_test_acc"].mean(),
                         "attack_accuracy": g["accuracy"].mean(),
                         "n_cells": g["cell_key"].nunique()})


def divergence_by_class(divergence: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """Per class, mean confidence and sensitivity gaps: original vs pruned.

    "Pruned" is the undefended, knowledge-full victims at the highest sparsity present
    (where the paper's effect is largest), averaged over methods and seeds. Returns the
    frame (rows class_id, columns ``<gap>_<original|pruned>``) and that sparsity.
    """
    orig = select(divergence, knowledge="original")
    pr = select(divergence, knowledge="full", pruned=True, defended=False)
    sparsity = float(pr["sparsity"].max()) if not pr.empty else None
    if sparsity is not None:
        pr = pr[pr["sparsity"] == sparsity]
    parts = {}
    for name, part in (("original", orig), ("pruned", pr)):
        if part.empty:
            continue
        g = part.groupby("class_id")[["conf_gap", "sens_gap"]].mean()
        parts[name] = g.add_suffix(f"_{name}")
    if not parts:
        return pd.DataFrame(), None
    return pd.concat(parts.values(), axis=1).sort_index(), sparsity


def groups(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, arch) pairs present, sorted."""
    if df.empty:
        return []
    return sorted(df[["dataset", "arch"]].drop_duplicates().itertuples(index=False, name=None))


def in_group(df: pd.DataFrame, group: tuple[str, str]) -> pd.DataFrame:
    return df[(df["dataset"] == group[0]) & (df["arch"] == group[1])]


def _prunable(arch: str, method: str, sparsity: float | None = None) -> bool:
    """Whether a grid makes cells of ``method`` for ``arch`` (at ``sparsity``: a method
    with a fixed sparsity, such as nm_2_4 at 0.5, has no cells at the others)."""
    try:
        check_prunable(arch, method)
        if sparsity is not None:
            PruneSpec(method, sparsity)
    except Exception:  # SpecError, or a name the specs no longer know
        return False
    return True


def expected_grid(results: Results) -> pd.DataFrame:
    """The grid the observed axis values span, one row per cell coordinate.

    (dataset, arch, num_shadows) and (defense, strength) are joint axes, because their
    values depend on each other. Per (dataset, arch, num_shadows) and seed: one
    original cell, plus the product of the non-original knowledge settings, methods,
    sparsities and (defense, strength) pairs seen on pruned cells, less the methods the
    architecture cannot be pruned with. Settings that build the same shadows as full
    (sparsity_unknown at the assumed sparsity, say) are still expected: the grid
    writes them as cells of their own.
    """
    frames = [results.table(t)[COORDS] for t in CELL_TABLES if not results.table(t).empty]
    if not frames:
        return pd.DataFrame(columns=COORDS)
    seen = pd.concat(frames).drop_duplicates()
    prefixes = seen[["dataset", "arch", "num_shadows"]].drop_duplicates().itertuples(
        index=False, name=None)
    seeds = sorted(seen["seed"].unique())
    pruned = seen[seen["knowledge"] != "original"]
    knowledge = order_knowledge(pruned["knowledge"].unique())
    methods = sorted(pruned["method"].unique())
    sparsities = sorted(pruned["sparsity"].unique())
    defenses = sorted(pruned[["defense", "strength"]].drop_duplicates().itertuples(
        index=False, name=None))
    rows = []
    for (dataset, arch, k), seed in itertools.product(list(prefixes), seeds):
        rows.append((dataset, arch, seed, k, "original", "none", 0.0, "none", 0.0))
        for kn, m, s, (d, st) in itertools.product(knowledge, methods, sparsities, defenses):
            if _prunable(arch, m, s):
                rows.append((dataset, arch, seed, k, kn, m, s, d, st))
    return pd.DataFrame(rows, columns=COORDS)


def missing_cells(results: Results) -> tuple[pd.DataFrame, list[str]]:
    """Expected grid coordinates absent from a cell table that has any rows.

    Returns (frame of the missing coordinates with a ``missing_from`` column naming the
    tables, sorted; list of the cell tables that have no rows at all). A table with no
    rows is reported once instead of listing every cell as missing from it.
    """
    expected = expected_grid(results)
    empty_tables = [t for t in TABLES if results.table(t).empty]
    missing_from: dict[tuple, list[str]] = {}
    for t in CELL_TABLES:
        if t in empty_tables:
            continue
        have = set(results.table(t)[COORDS].drop_duplicates().itertuples(index=False, name=None))
        for row in expected.itertuples(index=False, name=None):
            if row not in have:
                missing_from.setdefault(row, []).append(t)
    out = pd.DataFrame(list(missing_from), columns=COORDS)
    out["missing_from"] = [", ".join(v) for v in missing_from.values()]
    return out.sort_values(COORDS, ignore_index=True), empty_tables
