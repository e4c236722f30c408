"""PromptSource templates already applied: one JSONL per (dataset, template), `prompt`/`completion`.

Files are named `<dataset>_<template>.jsonl`; all templates of one dataset form one task
(instance-level instructions). Both parts may contain "_", so the dataset is the longest
known dataset name that prefixes the file name: known names come from the source config's
`datasets` list or from the mapping file. Completions end in GPT-3's `<|endoftext|>`, stripped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from data_prep.errors import DataError, EmptyOutputError, where
from data_prep.readers._io import iter_jsonl, outputs_list, require
from data_prep.schema import Instance, Task

log = logging.getLogger(__name__)
END_OF_TEXT = "<|endoftext|>"


def dataset_of(stem: str, datasets: Iterable[str]) -> str | None:
    """The longest name in `datasets` such that `stem` is `<name>_<template>`."""
    best = None
    for name in datasets:
        if stem.startswith(name + "_") and (best is None or len(name) > len(best)):
            best = name
    return best


def read_promptsource_file(path: Path, *, skip_empty: bool = False) -> list[Instance]:
    template = path.stem
    instances = []
    for lineno, rec in iter_jsonl(path):
        loc = where(path, lineno)
        prompt = require(rec, "prompt", loc)
        completion = require(rec, "completion", loc)
        if completion.endswith(END_OF_TEXT):
            completion = completion[: -len(END_OF_TEXT)]
        try:
            outputs = outputs_list(completion, loc, "completion")
        except EmptyOutputError:
            if not skip_empty:
                raise
            log.warning("%s: empty completion, skipped", loc)
            continue
        instances.append(Instance(input=prompt, outputs=outputs, id=f"{template}:{lineno}"))
    return instances


def read_promptsource(
    path: Path,
    *,
    datasets: Iterable[str],
    benchmark: str = "promptsource",
    skip_empty: bool = False,
) -> list[Task]:
    datasets = list(datasets)
    files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
    if not files:
        raise DataError(f"{path}: no PromptSource *.jsonl files")
    by_dataset: dict[str, list[Path]] = {}
    for f in files:
        ds = dataset_of(f.stem, datasets)
        if ds is None:
            raise DataError(
                f"{f}: cannot tell which dataset this template belongs to; list the dataset "
                f"in the source's 'datasets' or under 'tasks' in the mapping file"
            )
        by_dataset.setdefault(ds, []).append(f)
    tasks = []
    for ds, ds_files in sorted(by_dataset.items()):
        instances = [
            inst for f in ds_files for inst in read_promptsource_file(f, skip_empty=skip_empty)
        ]
        tasks.append(
            Task(
                name=ds,
                benchmark=benchmark,
                category="",
                instruction_level="instance",
                instances=instances,
                source=str(ds_files[0].parent / f"{ds}_*.jsonl"),
            )
        )
    return tasks
