"""PromptSource templates already applied: one JSONL per (dataset, template), `prompt`/`completion`.

Files are named `<dataset>_<template>.jsonl`; all templates of one dataset form one task
(instance-level instructions). Both parts may contain "_", so the dataset is the longest
known dataset name that prefixes the file name: known names come from the source config's
`datasets` list or from the mapping file. Completions end in GPT-3's `<|endoftext|>`, stripped.

Answer options (rank classification, paper §4.1): a record's own `answer_choices` (a list, or
PromptSource's "a ||| b" string) when it has one; else, when a template's completions form a
fixed label set (`label_set`: 2 to 20 short labels, each label on 4 distinct inputs on average,
e.g. Yes/No, positive/negative, 1-5 stars, A-E), that set, sorted, is every instance's options.
The applied files carry no template `answer_choices`, so the set is what the file shows: a
label no record of the file has is missing (a trimmed sample may show 2 of ag_news' 4 classes).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from data_prep.errors import DataError, EmptyOutputError, where
from data_prep.readers._io import iter_jsonl, outputs_list, require
from data_prep.schema import Instance, Task

log = logging.getLogger(__name__)
END_OF_TEXT = "<|endoftext|>"
# A template's completions are a fixed label set when they are few, short and repeated
# (T0's classification datasets have at most 14 classes: dbpedia_14).
MAX_LABELS = 20
MAX_LABEL_WORDS = 10
MIN_INPUTS_PER_LABEL = 4


def dataset_of(stem: str, datasets: Iterable[str]) -> str | None:
    """The longest name in `datasets` such that `stem` is `<name>_<template>`."""
    best = None
    for name in datasets:
        if stem.startswith(name + "_") and (best is None or len(name) > len(best)):
            best = name
    return best


def label_set(instances: Sequence[Instance]) -> list[str] | None:
    """The fixed label set of one template's instances (sorted), or None for free generation.

    A label set has 2 to MAX_LABELS labels of at most MAX_LABEL_WORDS words, and at least
    MIN_INPUTS_PER_LABEL distinct inputs per label on average: a title generated for the same
    passage over and over (duorc, quoref) repeats with its input, a class label does not.
    """
    pairs = {(inst.input, inst.outputs[0]) for inst in instances}
    labels = Counter(out for _, out in pairs)
    inputs = len({text for text, _ in pairs})
    if not 2 <= len(labels) <= MAX_LABELS or len(labels) * MIN_INPUTS_PER_LABEL > inputs:
        return None
    if any(len(label.split()) > MAX_LABEL_WORDS for label in labels):
        return None
    return sorted(labels)


def _record_choices(rec: dict, loc: str) -> list[str] | None:
    """A record's own `answer_choices` (list of strings, or "a ||| b"), else None."""
    value = rec.get("answer_choices")
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split("|||")
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DataError(f"{loc}: field 'answer_choices' must be a list of strings or 'a ||| b'")
    choices = [c.strip() for c in value if c.strip()]
    if len(choices) < 2:
        raise DataError(f"{loc}: field 'answer_choices' has fewer than 2 choices")
    return choices


def read_promptsource_file(path: Path, *, skip_empty: bool = False) -> list[Instance]:
    """One template's instances, with answer options where the template has a label set."""
    template = path.stem
    instances = []
    empty = 0
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
            empty += 1
            continue
        options = _record_choices(rec, loc)
        if options is not None and outputs[0] not in options:
            raise DataError(f"{loc}: completion {outputs[0]!r} is not one of 'answer_choices'")
        instances.append(
            Instance(input=prompt, outputs=outputs, options=options, id=f"{template}:{lineno}")
        )
    if empty:
        log.warning(
            "%s: skipped %d of %d records with an empty completion (skip_empty_outputs)",
            path,
            empty,
            empty + len(instances),
        )
    if instances and all(inst.options is None for inst in instances):
        labels = label_set(instances)
        if labels is not None:
            for inst in instances:
                inst.options = list(labels)
            log.debug("%s: label set %s (rank classification)", path, labels)
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
