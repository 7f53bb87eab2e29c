"""Tabular datasets: Purchase-100, Texas-100, Location (Shokri et al. 2017).

Two formats, tried in this order: ``<root>/<name>.npz`` (arrays ``features`` and
``labels``, read without pickle) and the original comma-separated text release.
Features stay as they are (binary 0/1); labels become 0-based class ids.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from mia_ray.errors import DatasetFileError

RELEASE_URL = "https://github.com/privacytrustlab/datasets"


@dataclass(frozen=True)
class Tabular:
    name: str
    num_features: int
    num_classes: int
    text: tuple[str, ...]  # one file "label,f1..fD", or (features file, labels file)
    archive: str  # what to fetch from RELEASE_URL

    # --- where and how -------------------------------------------------------

    def npz(self, root: str) -> str:
        return os.path.join(root, f"{self.name}.npz")

    def text_paths(self, root: str) -> list[str]:
        return [os.path.join(root, self.name, f) for f in self.text]

    def files(self, root: str) -> list[str]:
        return [self.npz(root), *self.text_paths(root)]

    @property
    def label_first(self) -> bool:
        return len(self.text) == 1

    def text_format(self) -> str:
        d, c = self.num_features, self.num_classes
        if self.label_first:
            return f"lines 'label,f1,...,f{d}' with labels 1..{c}"
        return (f"'{self.text[0]}' with lines 'f1,...,f{d}' and '{self.text[1]}' with one "
                f"label 1..{c} per line")

    def how(self, root: str) -> str:
        d, c = self.num_features, self.num_classes
        return (f"Expected either {self.npz(root)} holding arrays 'features' (N x {d}, numeric) "
                f"and 'labels' (N ints in 0..{c - 1}), or the Shokri et al. text release in "
                f"{os.path.join(root, self.name)}: {self.text_format()} (extract "
                f"{self.archive} from {RELEASE_URL}). See docs/datasets.md.")

    def fail(self, path: str, problem: str, root: str) -> DatasetFileError:
        return DatasetFileError(self.name, path, problem, self.how(root))

    # --- check (cheap) ---------------------------------------------------------

    def check(self, root: str, download: bool) -> None:
        if os.path.isfile(self.npz(root)):
            self._check_npz(root)
            return
        paths = self.text_paths(root)
        for path in paths:
            if not os.path.isfile(path):
                raise self.fail(path, f"no {self.name}.npz in {root} and no text release "
                                "file", root)
        self._check_first_line(paths[0], self.num_features + self.label_first, root)
        if not self.label_first:
            self._check_first_line(paths[1], 1, root)

    def _check_first_line(self, path: str, fields: int, root: str) -> None:
        with open(path, "rb") as fh:
            line = fh.readline().strip()
        if not line:
            raise self.fail(path, "file is empty (or its first line is blank)", root)
        found = line.count(b",") + 1
        if found != fields:
            raise self.fail(path, f"line 1 has {found} comma-separated fields, expected "
                            f"{fields} ({self.text_format()})", root)

    def _check_npz(self, root: str) -> None:
        path = self.npz(root)
        try:
            with zipfile.ZipFile(path) as z:
                heads = {k: _npy_header(z, f"{k}.npy") for k in ("features", "labels")}
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
            raise self.fail(path, f"not an npz with arrays 'features' and 'labels' ({e})",
                            root) from e
        self._check_shapes(path, heads["features"], heads["labels"], root)
        # Labels are small: read them here so one out of range fails the check (exit 2)
        # instead of the load, after work has started.
        with np.load(path, allow_pickle=False) as f:
            labels = f["labels"]
        if labels.ndim == 2 and labels.shape[1] > 1:
            return  # one-hot: its shape was checked, its values are checked on load
        self._class_ids(path, labels.reshape(-1), 0, "index", root)

    def _check_shapes(self, path: str, features, labels, root: str) -> None:
        """features/labels are (shape, dtype) pairs, from npy headers or loaded arrays."""
        (fshape, fdtype), (lshape, ldtype) = features, labels
        for key, dtype in (("features", fdtype), ("labels", ldtype)):
            if dtype.kind not in "biuf":
                raise self.fail(path, f"array '{key}' has dtype {dtype}, expected numbers", root)
        if len(fshape) != 2 or fshape[1] != self.num_features:
            raise self.fail(path, f"'features' has shape {fshape}, expected (N, "
                            f"{self.num_features})", root)
        if fshape[0] == 0:
            raise self.fail(path, "'features' has no rows", root)
        one_hot = (fshape[0], self.num_classes)
        if lshape not in ((fshape[0],), (fshape[0], 1), one_hot):
            raise self.fail(path, f"'labels' has shape {lshape}, expected ({fshape[0]},) to "
                            f"match the {fshape[0]} feature rows (or one-hot {one_hot})", root)

    # --- load ------------------------------------------------------------------

    def load(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        if os.path.isfile(self.npz(root)):
            return self._load_npz(root)
        return self._load_text(root)

    def _load_npz(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.npz(root)
        try:
            with np.load(path, allow_pickle=False) as f:
                features, labels = f["features"], f["labels"]
        except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
            raise self.fail(path, f"cannot read arrays 'features' and 'labels' ({e})",
                            root) from e
        self._check_shapes(path, (features.shape, features.dtype),
                           (labels.shape, labels.dtype), root)
        if labels.ndim == 2 and labels.shape[1] > 1:
            if not np.all((labels == 0) | (labels == 1)) or np.any(labels.sum(1) != 1):
                raise self.fail(path, "2-D 'labels' is not one-hot", root)
            labels = labels.argmax(1)
        y = self._class_ids(path, labels.reshape(-1), 0, "index", root)
        return self._features(path, features, root), y

    def _load_text(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        paths = self.text_paths(root)
        table = self._read_csv(paths[0], self.num_features + self.label_first, root)
        if self.label_first:
            y = self._class_ids(paths[0], table[:, 0], 1, "line", root)
            return self._features(paths[0], table[:, 1:], root), y
        labels = self._read_csv(paths[1], 1, root)[:, 0]
        if len(labels) != len(table):
            raise self.fail(paths[1], f"{len(labels)} labels for the {len(table)} feature "
                            f"lines of {paths[0]}", root)
        y = self._class_ids(paths[1], labels, 1, "line", root)
        return self._features(paths[0], table, root), y

    def _read_csv(self, path: str, fields: int, root: str) -> np.ndarray:
        self._check_first_line(path, fields, root)
        try:
            return np.loadtxt(path, delimiter=",", quotechar='"', dtype=np.float32, ndmin=2,
                              comments=None)
        except ValueError as e:
            raise self.fail(path, _first_bad_line(path, fields) or f"unreadable ({e})",
                            root) from e

    def _class_ids(self, path: str, labels: np.ndarray, first: int, unit: str,
                   root: str) -> np.ndarray:
        """Labels numbered from ``first`` -> int64 ids in [0, C), or a clear error."""
        last = first + self.num_classes - 1
        bad = np.flatnonzero((labels != np.round(labels)) | (labels < first) | (labels > last))
        if bad.size:
            i = int(bad[0])
            at = f"line {i + 1}" if unit == "line" else f"index {i}"
            raise self.fail(path, f"label {labels[i]:g} on {at} is not an integer in "
                            f"{first}..{last}", root)
        return labels.astype(np.int64) - first

    def _features(self, path: str, features: np.ndarray, root: str) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if not np.isfinite(x).all():
            raise self.fail(path, "features hold NaN or infinite values", root)
        return x


def _first_bad_line(path: str, fields: int) -> str | None:
    """Say which line breaks the format: numpy's own message counts rows inconsistently."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.strip().split(",")
            if len(parts) != fields:
                return (f"line {number} has {len(parts)} comma-separated fields, "
                        f"expected {fields}")
            for col, part in enumerate(parts, start=1):
                try:
                    float(part.strip().strip('"'))
                except ValueError:
                    return f"line {number}, field {col} is {part.strip()!r}, not a number"
    return None


def _npy_header(z: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array inside an npz, without reading its data."""
    fmt = np.lib.format
    with z.open(member) as fh:
        major, _ = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, _, dtype = read(fh)
    return shape, dtype


SOURCES = {
    "purchase100": Tabular("purchase100", 600, 100, ("dataset_purchase",),
                           "dataset_purchase.tgz"),
    "texas100": Tabular("texas100", 6169, 100, ("feats", "labels"),
                        "dataset_texas.tgz (its texas/100/feats and texas/100/labels)"),
    "location": Tabular("location", 446, 30, ("bangkok",), "dataset_location.tgz"),
}
