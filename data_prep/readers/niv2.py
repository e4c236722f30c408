"""Super-NaturalInstructions task JSON (Definition, Positive Examples, Instances, Categories)."""

from __future__ import annotations

from pathlib import Path

from data_prep.errors import DataError, EmptyOutputError
from data_prep.readers._io import normalize_category, outputs_list, read_json, require
from data_prep.schema import Instance, Task


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
    instances = []
    for i, inst in enumerate(require(d, "Instances", loc, kind=list)):
        inst_loc = f"{loc}: Instances[{i}] (id {inst.get('id', '?')!r})"
        text = require(inst, "input", inst_loc)
        try:
            outputs = outputs_list(
                require(inst, "output", inst_loc, kind=(str, list)), inst_loc, "output"
            )
        except EmptyOutputError:
            if not skip_empty:
                raise
            continue
        instances.append(Instance(input=text, outputs=outputs, id=str(inst.get("id", i))))
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
    if not files:
        raise DataError(f"{path}: no Super-NaturalInstructions task*.json files")
    return [read_niv2_task(f, benchmark=benchmark, skip_empty=skip_empty) for f in files]
