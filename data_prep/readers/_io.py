"""Small strict readers for JSON and JSONL that name the file and line on any error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.errors import DataError, EmptyOutputError, where
from data_prep.schema import normalize_category  # noqa: F401  (re-exported for readers)


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{where(path, e.lineno)}: malformed JSON ({e.msg}, column {e.colno})"
        ) from e


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-empty line.

    Splits on "\\n" only: real PromptSource records hold raw U+2028 and "\\r" inside strings,
    which `str.splitlines()` and universal-newline text mode would break apart.
    """
    try:
        data = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    for lineno, line in enumerate(data.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where(path, lineno)}: malformed JSON ({e.msg})") from e
        if not isinstance(record, dict):
            raise DataError(
                f"{where(path, lineno)}: expected a JSON object, got {type(record).__name__}"
            )
        yield lineno, record


def require(
    record: dict[str, Any], key: str, loc: str, *, kind: type | tuple[type, ...] = str
) -> Any:
    """`record[key]`, or a DataError naming `loc` and the field when missing or mistyped."""
    if key not in record:
        raise DataError(f"{loc}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind):
        raise DataError(f"{loc}: field {key!r} has type {type(value).__name__}, expected {kind}")
    return value


def outputs_list(value: Any, loc: str, field: str) -> list[str]:
    """A non-empty list of non-empty strings from a str or list field."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise DataError(f"{loc}: field {field!r} must be a string or a list of strings")
    items = [x.strip() for x in items]
    if not items or not any(items):
        raise EmptyOutputError(f"{loc}: field {field!r} is empty")
    return [x for x in items if x]
