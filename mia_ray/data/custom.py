"""Datasets given by path: an npz, a CSV or Parquet table, or a folder of class folders.

:func:`mia_ray.resolution.resolve_dataset` resolves a path through :func:`resolve`: the
file is read once, checked, and described by its stem (the name in every result row), a
content hash (part of the key, so an edited file never reuses stale models) and the
inferred :class:`~mia_ray.info.DatasetInfo`, which the DatasetSpec then carries.
``loaders.load_pool`` reads it through :func:`load`, so everything that loads a pool
(the pipeline, staging to cluster storage) covers these datasets too.

Formats (docs/datasets.md):

- ``.npz`` with ``features`` and ``labels``: (N, D) is tabular and kept as it is;
  (N, H, W, C) or (N, C, H, W) or (N, H, W) are images (the channel axis is the last
  or second one of size 1 or 3, else 4; the last wins a tie);
- a folder with one sub-folder per class (sorted names are the classes), images
  converted to RGB and resized to the first image's size;
- ``.csv`` / ``.parquet`` with a label column (``label_column``, default ``label``);
  every other column is a numeric feature.

Images (uint8 divided by 255) are standardised per channel with the pool's own mean
and standard deviation; tabular features are left as they are. Integer labels must
be 0..C-1 with C inferred as the largest + 1; labels of a table that are not
integers (strings) become class ids in sorted order. Nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.info import DatasetInfo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
HOW = ("Expected an .npz with arrays 'features' and 'labels', a .csv or .parquet file with "
       "a label column, or a folder of class folders of images; see docs/datasets.md.")


@dataclass(frozen=True)
class Resolved:
    name: str
    path: str
    content: str
    info: DatasetInfo


def looks_like_path(value: object) -> bool:
    return isinstance(value, str) and (os.path.exists(value) or os.sep in value
                                       or value.lower().endswith((".npz", *TABLE_SUFFIXES)))


def resolve(value: str, label_column: str, *, known) -> Resolved:
    """Describe the dataset at ``value``, or refuse it with one message."""
    if not looks_like_path(value):
        raise SpecError("dataset", value, f"one of {', '.join(repr(k) for k in known)}, or the "
                        "path of an .npz, .csv or .parquet file or a folder of class folders")
    path = os.path.abspath(value)
    if not isinstance(label_column, str) or not label_column:
        raise SpecError("label_column", label_column, "a non-empty column name")
    if not os.path.exists(path):
        raise DatasetFileError(_stem(path), path, "no such file or folder", HOW)
    content = content_hash(path)
    x, y = _read(path, content, label_column)
    kind = "tabular" if x.ndim == 2 else "image"
    info = DatasetInfo(kind, int(y.max()) + 1, tuple(int(d) for d in x.shape[1:]), pool=len(y))
    return Resolved(name=_stem(path), path=path, content=content, info=info)


def load(path: str, content: str, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """The pool as (x float32, y int64); refuses a file changed since it was resolved."""
    if content_hash(path) != content:
        raise DatasetFileError(_stem(path), path, "the file changed since the run was planned "
                               "(its content hash differs); start the run again", HOW)
    return _read(path, content, label_column)


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    return base.split(".")[0] if "." in base and not os.path.isdir(path) else base


# --- content hash --------------------------------------------------------------------

def source_files(path: str) -> list[str]:
    """The file at ``path``, or the files under the folder (hidden ones left out)."""
    if os.path.isfile(path):
        return [path]
    out = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(folder, f) for f in sorted(files) if not f.startswith(".")]
    return out


def content_hash(path: str) -> str:
    """16 hex digits of SHA-256 over the bytes (and, in a folder, relative paths)."""
    stamp = tuple((f, os.path.getsize(f), os.stat(f).st_mtime_ns) for f in source_files(path))
    return _hash(path, stamp)


@functools.lru_cache(maxsize=64)
def _hash(path: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for f, _, _ in stamp:
        h.update(os.path.relpath(f, path).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


# --- readers -------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _read(path: str, content: str, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    name = _stem(path)

    def fail(problem: str) -> DatasetFileError:
        return DatasetFileError(name, path, problem, HOW)

    if os.path.isdir(path):
        x, y = _read_folder(path, fail)
    elif path.lower().endswith(".npz"):
        x, y = _read_npz(path, fail)
    elif path.lower().endswith(TABLE_SUFFIXES):
        x, y = _read_table(path, label_column, fail)
    else:
        raise fail("unknown format (not .npz, .csv, .parquet or a folder)")
    if len(y) < 2 or len(np.unique(y)) < 2:
        raise fail(f"{len(y)} samples of {len(np.unique(y))} class(es); at least two classes "
                   "are needed")
    if not np.isfinite(x).all():
        raise fail("features hold NaN or infinite values")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _class_ids(labels: np.ndarray, fail) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise fail(f"'labels' has shape {labels.shape}, expected (N,)")
    if labels.dtype.kind not in "biuf":
        raise fail(f"'labels' has dtype {labels.dtype}, expected integers 0..C-1")
    bad = np.flatnonzero((labels != np.round(labels)) | (labels < 0))
    if bad.size:
        raise fail(f"label {labels[bad[0]]:g} at index {int(bad[0])} is not an integer >= 0 "
                   "(labels are class ids 0..C-1; C is inferred as the largest + 1)")
    return labels.astype(np.int64)


def _standardise(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> float32, uint8 scaled to [0, 1], then per-channel z-scores."""
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    x -= mean
    x /= np.where(std > 0, std, 1.0)
    return np.ascontiguousarray(x)


def _read_npz(path: str, fail) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            features, labels = f["features"], f["labels"]
    except (ValueError, KeyError, OSError) as e:
        raise fail(f"cannot read arrays 'features' and 'labels' without pickle ({e})") from e
    if features.dtype.kind not in "biuf":
        raise fail(f"'features' has dtype {features.dtype}, expected numbers")
    y = _class_ids(labels, fail)
    if len(features) != len(y):
        raise fail(f"{len(features)} feature rows but {len(y)} labels")
    if features.ndim == 2:
        return np.ascontiguousarray(features, dtype=np.float32), y
    if features.ndim == 3:  # (N, H, W) greyscale
        return _standardise(features[:, None]), y
    if features.ndim == 4:
        # The channel axis is the last or the second one holding 1 or 3 (grey, RGB),
        # else 4 (RGBA): channels-last first, as most image arrays are stored.
        last, second = features.shape[3], features.shape[1]
        channels_first = last not in (1, 3) and (second in (1, 3) or
                                                 (last != 4 and second == 4))
        if not channels_first and last not in (1, 3, 4):
            raise fail(f"'features' has shape {features.shape}: images need 1, 3 or 4 "
                       "channels, as (N, H, W, C) or (N, C, H, W)")
        images = features if channels_first else features.transpose(0, 3, 1, 2)
        return _standardise(images), y
    raise fail(f"'features' has shape {features.shape}, expected (N, D), (N, H, W), "
               "(N, H, W, C) or (N, C, H, W)")


def _read_table(path: str, label_column: str, fail) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    try:
        table = (pd.read_csv(path) if path.lower().endswith(".csv")
                 else pd.read_parquet(path))
    except Exception as e:  # pandas raises many types for a broken file
        raise fail(f"cannot read the table ({type(e).__name__}: {e})") from e
    if label_column not in table.columns:
        raise fail(f"no label column {label_column!r} (columns: {list(table.columns)[:10]}); "
                   "name it with --label-column")
    labels = table.pop(label_column)
    if labels.isna().any():
        raise fail(f"label column {label_column!r} has empty values")
    if labels.dtype.kind in "biuf":
        y = _class_ids(labels.to_numpy(), fail)
    else:  # names: class ids in sorted order of the names
        names, y = np.unique(labels.astype(str).to_numpy(), return_inverse=True)
        y = y.astype(np.int64)
    bad = [c for c in table.columns if table[c].dtype.kind not in "biuf"]
    if bad or table.shape[1] == 0:
        raise fail(f"feature columns must be numeric; not numeric: {bad[:5]}" if bad
                   else "no feature columns besides the label")
    return np.ascontiguousarray(table.to_numpy(dtype=np.float32)), y


def _read_folder(path: str, fail) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    with os.scandir(path) as it:
        classes = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    if len(classes) < 2:
        raise fail(f"found {len(classes)} class folders, expected at least 2")
    files, labels = [], []
    for c, cls in enumerate(classes):
        images = sorted(f for f in os.listdir(os.path.join(path, cls))
                        if f.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise fail(f"class folder {cls!r} has no image files")
        files += [os.path.join(path, cls, f) for f in images]
        labels += [c] * len(images)
    size = None
    pixels = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                size = size or im.size
                pixels.append(np.asarray(im.resize(size) if im.size != size else im))
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetFileError(_stem(path), f, f"unreadable image ({e})", HOW) from e
    return _standardise(np.stack(pixels).transpose(0, 3, 1, 2)), np.asarray(labels, np.int64)
