"""The one error type that bad user input raises, before any work starts."""

from __future__ import annotations

from collections.abc import Iterable


class SpecError(ValueError):
    """A setting is wrong: names the field, the value given and what is allowed.

    Raised while specs are built, so a sweep fails before Ray starts and before
    any model is trained.
    """

    def __init__(self, field: str, value: object, allowed: str | Iterable[object]):
        if not isinstance(allowed, str):
            allowed = "one of " + ", ".join(repr(a) for a in allowed)
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: expected {allowed}")


class DatasetFileError(FileNotFoundError):
    """A dataset's files are missing or malformed: says which file, where, and how to get it."""

    def __init__(self, dataset: str, path: str, problem: str, how_to_get: str):
        self.dataset = dataset
        self.path = path
        super().__init__(f"dataset {dataset!r}: {problem} at {path}. {how_to_get}")
