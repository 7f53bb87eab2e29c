"""Content keys: what names every artifact, and the mixin that gives a spec its key.

Every artifact (a trained model, a fitted attack, a result file) is addressed by the
content key of the spec that produced it: a hash of the spec's canonical JSON. Two
specs that describe the same work have the same key, on any machine and in any
process, so a sweep can skip what is already built and never train a model twice.

A key is computed from the spec's fields alone: it reads no file and imports nothing
(an architecture by reference enters with the source hash found when it was resolved,
:mod:`mia_ray.resolution`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from mia_ray.catalog import is_arch_reference
from mia_ray.errors import SpecError
from mia_ray.info import ArchReference

# Bump when a change to the code makes old artifacts wrong: it is part of every key.
# 2: the authors' architectures, attack-network init, early stopping and normalisation;
#    model keys no longer hold K (num_shadows), so a sweep can grow its shadow sets.
KEY_VERSION = 2


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same spec gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def short_hash(fields: Any) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``fields``."""
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:16]


def _key_value(value: Any) -> Any:
    # A nested spec enters by its own (cached) key: equal parts hash alike, and a grid
    # of thousands of cells hashes each shared dataset or training spec once.
    if isinstance(value, Spec):
        return value.key()
    if dataclasses.is_dataclass(value):
        return key_fields(value)
    if isinstance(value, tuple):
        return [_key_value(v) for v in value]
    return value


def key_fields(spec: Any) -> dict[str, Any]:
    """The fields that define what a spec computes (not where its files live)."""
    out = {f.name: _key_value(getattr(spec, f.name)) for f in dataclasses.fields(spec)
           if f.metadata.get("key", True)}
    arch = out.get("arch")
    if is_arch_reference(arch):
        # An architecture by reference enters with a hash of its source: editing the
        # function gives new keys, so stale models are never reused.
        if not isinstance(arch, ArchReference):
            raise SpecError("arch", arch, "an architecture reference resolved first "
                            "(mia_ray.resolution.resolve_arch), which hashes its source")
        out["arch"] = arch.identity
    return out


def spec_default(spec: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``spec``: the one place it is set.

    Another spec's field, a command-line option or a sweep that means "the same default"
    reads it here instead of writing the value again (docs/grid.md, "Where each default
    lives")."""
    return spec.__dataclass_fields__[name].default


class Spec:
    """Mixin: a stable content key and a plain-dict view."""

    def key_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "v": KEY_VERSION, **key_fields(self)}

    def key(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of the key fields."""
        cached = self.__dict__.get("_key")
        if cached is None:  # specs are frozen, so the key can be computed once
            cached = short_hash(self.key_dict())
            object.__setattr__(self, "_key", cached)
        return cached

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values, for the record a stored artifact keeps; fields
        marked ``record: False`` (what travels to a process, like a staged location or
        an audit's member indices) are left out."""
        return _record(self)


def _record(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _record(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.metadata.get("record", True)}
    if isinstance(value, (list, tuple)):
        return type(value)(_record(v) for v in value)
    if isinstance(value, dict):
        return {k: _record(v) for k, v in value.items()}
    return value
