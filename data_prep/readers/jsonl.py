"""Plain JSONL: `prompt`/`completion`, or `input`/`output` (+ optional `options`), and raw text.

A record's task is its `task` field (the name is configurable) or the source's fixed `task`.
Plain text (`text` records, e.g. OPT pre-training data) becomes examples with an empty prompt,
so the loss covers the whole text.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.errors import DataError, where
from data_prep.readers._io import iter_jsonl, outputs_list, require
from data_prep.schema import Instance, Task


def _files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
    if not files:
        raise DataError(f"{path}: no *.jsonl files")
    return files


def read_jsonl(
    path: Path,
    *,
    benchmark: str,
    task: str | None = None,
    task_field: str = "task",
    instruction: str = "",
) -> list[Task]:
    by_task: dict[str, list[Instance]] = {}
    sources: dict[str, str] = {}
    for f in _files(path):
        for lineno, rec in iter_jsonl(f):
            loc = where(f, lineno)
            name = task if task is not None else require(rec, task_field, loc)
            if "prompt" in rec or "completion" in rec:
                src = require(rec, "prompt", loc)
                outputs = outputs_list(require(rec, "completion", loc), loc, "completion")
            else:
                src = require(rec, "input", loc)
                outputs = outputs_list(require(rec, "output", loc, kind=(str, list)), loc, "output")
            options = rec.get("options")
            if options is not None and not (
                isinstance(options, list) and all(isinstance(o, str) for o in options)
            ):
                raise DataError(f"{loc}: field 'options' must be a list of strings")
            by_task.setdefault(name, []).append(
                Instance(input=src, outputs=outputs, options=options, id=f"{f.name}:{lineno}")
            )
            sources.setdefault(name, str(f))
    return [
        Task(
            name=name,
            benchmark=benchmark,
            category="",
            instruction_level="instance",
            definition=instruction,
            instances=insts,
            source=sources[name],
        )
        for name, insts in sorted(by_task.items())
    ]


def read_text(path: Path, *, benchmark: str, task: str, field: str = "text") -> list[Task]:
    instances = []
    for f in _files(path):
        for lineno, rec in iter_jsonl(f):
            loc = where(f, lineno)
            text = require(rec, field, loc)
            if not text.strip():
                raise DataError(f"{loc}: field {field!r} is empty")
            instances.append(Instance(input="", outputs=[text], id=f"{f.name}:{lineno}"))
    return [
        Task(
            name=task,
            benchmark=benchmark,
            category="",
            instruction_level="instance",
            instances=instances,
            source=str(path),
        )
    ]
