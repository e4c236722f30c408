"""Super-NaturalInstructions task JSON (Definition, Positive Examples, Instances, Categories).

Instance ids must be unique within a task: a repeated id whose input and outputs equal the first
one's is dropped (one warning per task with the count), any other repeat is an error naming both
positions. A folder's files not named `task*.json` are not NI tasks; they are skipped with a
warning naming them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from data_prep.errors import DataError, EmptyOutputError
from data_prep.readers._io import normalize_category, outputs_list, read_json, require
from data_prep.schema import Instance, Task

log = logging.getLogger(__name__)


def _first_str(d: dict, key: str, loc: str) -> str:
    value = require(d, key, loc, kind=(list, str))
    if isinstance(value, str):
        return value
    if not value or not isinstance(value[0], str):
        raise DataError(f"{loc}: field {key!r} is empty")
    return value[0]


def read_niv2_task(path: Path, *, benchmark: str = "niv2", skip_empty: bool = False) -> Task:
    d = read_json(path)
    loc = str(path)
    if not isinstance(d, dict):
        raise DataError(f"{loc}: expected a JSON object")
    definition = _first_str(d, "Definition", loc)
    categories = d.get("Categories") or []
    category = normalize_category(categories[0]) if categories else ""
    demos = []
    for i, ex in enumerate(d.get("Positive Examples") or []):
        ex_loc = f"{loc}: 'Positive Examples'[{i}]"
        demos.append(
            Instance(
                input=require(ex, "input", ex_loc),
                outputs=outputs_list(
                    require(ex, "output", ex_loc, kind=(str, list)), ex_loc, "output"
                ),
                id=f"pos{i}",
            )
        )
    records = require(d, "Instances", loc, kind=list)
    instances = []
    first: dict[str, int] = {}  # id -> position in `instances`
    positions: dict[str, int] = {}  # id -> index in the file's Instances
    empty = duplicates = 0
    for i, inst in enumerate(records):
        if not isinstance(inst, dict):
            raise DataError(f"{loc}: Instances[{i}]: expected an object")
        inst_loc = f"{loc}: Instances[{i}] (id {inst.get('id', '?')!r})"
        text = require(inst, "input", inst_loc)
        try:
            outputs = outputs_list(
                require(inst, "output", inst_loc, kind=(str, list)), inst_loc, "output"
            )
        except EmptyOutputError:
            if not skip_empty:
                raise
            empty += 1
            continue
        inst_id = str(inst.get("id", i))
        if inst_id in first:
            kept = instances[first[inst_id]]
            if kept.input != text or kept.outputs != outputs:
                raise DataError(
                    f"{inst_loc}: id already used by Instances[{positions[inst_id]}] "
                    "with another input or output"
                )
            duplicates += 1
            continue
        first[inst_id], positions[inst_id] = len(instances), i
        instances.append(Instance(input=text, outputs=outputs, id=inst_id))
    if empty:
        log.warning(
            "%s: skipped %d of %d instances with an empty output (skip_empty_outputs)",
            loc,
            empty,
            len(records),
        )
    if duplicates:
        log.warning(
            "%s: dropped %d instances repeating an earlier instance (same id, input and output)",
            loc,
            duplicates,
        )
    return Task(
        name=path.stem,
        benchmark=benchmark,
        category=category,
        instruction_level="task",
        definition=definition.strip(),
        demonstrations=demos,
        instances=instances,
        source=str(path),
    )


def read_niv2(path: Path, *, benchmark: str = "niv2", skip_empty: bool = False) -> list[Task]:
    """One task per `task*.json` file (or the one file `path`)."""
    files = [path] if path.is_file() else sorted(path.glob("task*.json"))
    if path.is_dir():
        known = set(files)
        others = sorted(
            p.name
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p not in known
        )
        if others:
            log.warning(
                "%s: skipped %d files not named task*.json: %s%s",
                path,
                len(others),
                ", ".join(others[:10]),
                ", ..." if len(others) > 10 else "",
            )
    if not files:
        raise DataError(f"{path}: no Super-NaturalInstructions task*.json files")
    return [read_niv2_task(f, benchmark=benchmark, skip_empty=skip_empty) for f in files]
