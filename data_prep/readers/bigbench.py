"""BIG-bench task JSON: `examples` with `target` (generation) or `target_scores` (multiple choice).

Multiple-choice `target_scores` become answer options (in the file's order); the outputs are the
options with the highest score. An example with `target_scores` is multiple choice even when it
also has a `target`: BIG-bench scores `target_scores` with `multiple_choice_grade` and `target`
with generation metrics, and `target` is often not an option at all (strategyqa: options
Yes/No, `target` an explanation), so taking it as the output would make every option wrong.
An example whose `target_scores` marks no option correct (best score <= 0) is an error naming
the file and example index (`skip_empty_outputs` skips it, counted in one warning per task).
The task instruction is the `task_prefix` when the task has one (that is what BIG-bench shows
the model), else its one-line `description`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from data_prep.errors import DataError, EmptyOutputError, NoCorrectOptionError
from data_prep.readers._io import normalize_category, outputs_list, read_json, require
from data_prep.schema import Instance, Task

log = logging.getLogger(__name__)
# Keywords that describe a task's format, not its content, so never its category.
FORMAT_KEYWORDS = frozenset(
    {
        "multiple choice",
        "zero-shot",
        "one-shot",
        "few-shot",
        "many-shot",
        "json",
        "free response",
        "non-english",
        "multilingual",
        "low-resource language",
        "numerical response",
        "repeated interaction",
        "game play",
        "multi-step",
        "example task",
    }
)


def bigbench_category(keywords: list[str]) -> str:
    """The first keyword that is not a format tag (what shared/data/bigbench/INDEX.json suggests)."""
    for kw in keywords:
        if normalize_category(kw) not in FORMAT_KEYWORDS:
            return normalize_category(kw)
    return ""


def multiple_choice(scores: dict, loc: str) -> tuple[list[str], list[str]]:
    """(options, outputs) of a `target_scores` mapping: outputs are the best-scored options.

    Raises NoCorrectOptionError when no option scores above 0 (every option would be "correct").
    """
    if not scores:
        raise DataError(f"{loc}: field 'target_scores' is empty")
    for option, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise DataError(f"{loc}: target_scores[{option!r}]={score!r} is not a number")
    best = max(scores.values())
    if best <= 0:
        raise NoCorrectOptionError(
            f"{loc}: field 'target_scores' marks no option correct (best score {best!r})"
        )
    outputs = [str(k) for k, v in scores.items() if v == best]
    if not any(o.strip() for o in outputs):
        raise EmptyOutputError(f"{loc}: the best-scored option in 'target_scores' is empty")
    return [str(k) for k in scores], outputs


def read_bigbench_task(
    path: Path, *, benchmark: str = "bigbench", skip_empty: bool = False
) -> Task:
    d = read_json(path)
    loc = str(path)
    if not isinstance(d, dict):
        raise DataError(f"{loc}: expected a JSON object")
    examples = require(d, "examples", loc, kind=list)
    instances = []
    skipped: dict[str, int] = {}
    explanations = 0  # `target` beside `target_scores` that is not one of the options
    for i, ex in enumerate(examples):
        ex_loc = f"{loc}: examples[{i}]"
        if not isinstance(ex, dict):
            raise DataError(f"{ex_loc}: expected an object")
        text = require(ex, "input", ex_loc)
        options = None
        try:
            if "target_scores" in ex:
                scores = require(ex, "target_scores", ex_loc, kind=dict)
                options, outputs = multiple_choice(scores, ex_loc)
                target = ex.get("target")
                targets = [target] if isinstance(target, str) else target or []
                explanations += any(
                    isinstance(t, str) and t.strip() not in options for t in targets
                )
            elif "target" in ex:
                outputs = outputs_list(ex["target"], ex_loc, "target")
            else:
                raise DataError(f"{ex_loc}: missing field 'target' (or 'target_scores')")
        except EmptyOutputError as e:
            if not skip_empty:
                raise
            reason = "no correct option" if isinstance(e, NoCorrectOptionError) else "empty target"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        instances.append(Instance(input=text, outputs=outputs, options=options, id=str(i)))
    if skipped:
        log.warning(
            "%s: skipped %d of %d examples (%s; skip_empty_outputs)",
            loc,
            sum(skipped.values()),
            len(examples),
            ", ".join(f"{n} with {reason}" for reason, n in sorted(skipped.items())),
        )
    if explanations:
        log.info(
            "%s: %d multiple-choice examples also have a free-text 'target' that is not an "
            "option; their outputs come from 'target_scores'",
            loc,
            explanations,
        )
    prefix = (d.get("task_prefix") or "").strip()
    definition = prefix or require(d, "description", loc).strip()
    return Task(
        name=path.stem,
        benchmark=benchmark,
        category=bigbench_category(d.get("keywords") or []),
        instruction_level="task",
        definition=definition,
        instances=instances,
        source=str(path),
    )


def read_bigbench(
    path: Path, *, benchmark: str = "bigbench", skip_empty: bool = False
) -> list[Task]:
    """One task per JSON file in `path` (INDEX.json skipped), or the one file `path`."""
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.glob("*.json") if p.name != "INDEX.json")
    )
    if not files:
        raise DataError(f"{path}: no BIG-bench task JSON files")
    return [read_bigbench_task(f, benchmark=benchmark, skip_empty=skip_empty) for f in files]
