"""BIG-bench task JSON: `examples` with `target` (generation) or `target_scores` (multiple choice).

Multiple-choice `target_scores` become answer options (in the file's order); the outputs are the
options with the highest score. The task instruction is the `task_prefix` when the task has one
(that is what BIG-bench shows the model), else its one-line `description`.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.errors import DataError, EmptyOutputError
from data_prep.readers._io import normalize_category, outputs_list, read_json, require
from data_prep.schema import Instance, Task

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


def read_bigbench_task(
    path: Path, *, benchmark: str = "bigbench", skip_empty: bool = False
) -> Task:
    d = read_json(path)
    loc = str(path)
    if not isinstance(d, dict):
        raise DataError(f"{loc}: expected a JSON object")
    examples = require(d, "examples", loc, kind=list)
    instances = []
    for i, ex in enumerate(examples):
        ex_loc = f"{loc}: examples[{i}]"
        if not isinstance(ex, dict):
            raise DataError(f"{ex_loc}: expected an object")
        text = require(ex, "input", ex_loc)
        options = None
        if "target_scores" in ex:
            scores = require(ex, "target_scores", ex_loc, kind=dict)
            if not scores:
                raise DataError(f"{ex_loc}: field 'target_scores' is empty")
            options = [str(k) for k in scores]
            best = max(scores.values())
            outputs = [k for k, v in scores.items() if v == best]
        if "target" in ex:
            try:
                outputs = outputs_list(ex["target"], ex_loc, "target")
            except EmptyOutputError:
                if not skip_empty:
                    raise
                continue
        elif options is None:
            raise DataError(f"{ex_loc}: missing field 'target' (or 'target_scores')")
        if not any(o.strip() for o in outputs):
            raise DataError(f"{ex_loc}: empty output")
        instances.append(Instance(input=text, outputs=outputs, options=options, id=str(i)))
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
