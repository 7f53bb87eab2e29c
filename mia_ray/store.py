"""Content-addressed artifact store on any pyarrow filesystem.

Layout: ``<root>/<kind>/<key>/<file>``. A local folder, NFS, ``s3://`` or ``gs://``
root all go through :mod:`pyarrow.fs`, so every node of a cluster reads and writes the
same store with the same code.

Every write goes to a hidden temporary name first and is then moved into place, so
a reader never sees half a file, and a killed writer leaves only a hidden temp file
that no reader looks at. An artifact counts as present once its ``meta.json`` exists:
it is always written last.
"""

from __future__ import annotations

import io
import json
import posixpath
import uuid
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from mia_ray.errors import SpecError

META = "meta.json"


def resolve_filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a pyarrow URI."""
    if "://" in root:
        try:
            return pafs.FileSystem.from_uri(root)
        except Exception as exc:  # pyarrow raises several types for bad URIs
            raise SpecError("storage", root,
                            f"a local folder or a URI pyarrow can open (s3://, gs://): {exc}"
                            ) from exc
    return pafs.LocalFileSystem(), posixpath.abspath(root)


def check_writable(root: str) -> None:
    """Fail before any work starts if the storage root cannot be written."""
    fs, base = resolve_filesystem(root)
    probe = posixpath.join(base, f".probe-{uuid.uuid4().hex}")
    try:
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except Exception as exc:
        raise SpecError("storage", root, f"a folder or URI this process can write to ({exc})"
                        ) from exc


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write to a hidden temporary sibling, then move it over ``path``."""
    folder, name = posixpath.split(path)
    fs.create_dir(folder, recursive=True)
    tmp = posixpath.join(folder, f".tmp-{uuid.uuid4().hex}-{name}")
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


class ArtifactStore:
    """Artifacts keyed by (kind, spec key). Safe to share between processes and nodes."""

    def __init__(self, root: str):
        self.root = root
        self.fs, self.base = resolve_filesystem(root)

    def __reduce__(self):  # filesystems do not all pickle; Ray ships the root instead
        return (ArtifactStore, (self.root,))

    def path(self, kind: str, key: str, name: str = "") -> str:
        parts = [self.base, kind, key] + ([name] if name else [])
        return posixpath.join(*parts)

    def has(self, kind: str, key: str) -> bool:
        return _exists(self.fs, self.path(kind, key, META))

    def _write(self, kind: str, key: str, name: str, data: bytes) -> None:
        write_bytes_atomic(self.fs, self.path(kind, key, name), data)

    def _read(self, kind: str, key: str, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(kind, key, name)) as f:
            return f.read()

    # -- meta (the commit marker) ------------------------------------------------
    def put_meta(self, kind: str, key: str, meta: dict[str, Any]) -> None:
        self._write(kind, key, META, json.dumps(meta, sort_keys=True, indent=1).encode())

    def meta(self, kind: str, key: str) -> dict[str, Any]:
        return json.loads(self._read(kind, key, META))

    # -- torch weights -----------------------------------------------------------
    def put_state_dict(self, kind: str, key: str, state: dict[str, Any],
                       name: str = "weights.pt") -> None:
        import torch  # here, not at the top: analysis reads results without torch

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
        self._write(kind, key, name, buf.getvalue())

    def state_dict(self, kind: str, key: str, name: str = "weights.pt") -> dict[str, Any]:
        import torch

        # weights_only: a checkpoint is data, never code (see README, Security).
        return torch.load(io.BytesIO(self._read(kind, key, name)), map_location="cpu",
                          weights_only=True)

    # -- numpy arrays --------------------------------------------------------------
    def put_arrays(self, kind: str, key: str, arrays: dict[str, np.ndarray],
                   name: str = "arrays.npz") -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self._write(kind, key, name, buf.getvalue())

    def arrays(self, kind: str, key: str, name: str = "arrays.npz") -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self._read(kind, key, name)), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def keys(self, kind: str) -> list[str]:
        """Keys of the complete artifacts of one kind (``models``, ``features``, ...)."""
        sel = pafs.FileSelector(posixpath.join(self.base, kind), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(sel)
                      if info.type == pafs.FileType.Directory and self.has(kind, info.base_name))
