"""The error raised for bad input data: always names the file (and line), task and field."""

from __future__ import annotations


class DataError(ValueError):
    """Malformed or incomplete input; the message says where (file:line, task, field)."""


class EmptyOutputError(DataError):
    """An instance whose output is empty (skippable with a source's `skip_empty_outputs`)."""


def where(path: object, line: int | None = None) -> str:
    """`path` or `path:line` for messages."""
    return f"{path}:{line}" if line is not None else str(path)


class NoCorrectOptionError(EmptyOutputError):
    """A multiple-choice instance none of whose options is marked correct (BIG-bench
    `target_scores` all <= 0); skippable like an empty output."""
