"""Evaluation prompts: the training renderer (`data_prep.render.render_example`) plus a fixed,
seeded choice of k demonstrations that never includes the instance itself, nor its record under
another template (`data_prep.records.record_links`: a held-out PromptSource task's pool is its
own evaluation instances, where the same review often appears under two templates).

Evaluation uses one fixed delimiter (`EvalConfig.delimiter`, default "\\nAnswer:", one of the
delimiters training samples from) so that scores do not depend on a draw, and the same
demonstrations for every model (the draw is seeded by split, task and instance index).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence

from data_prep.records import record_links
from data_prep.render import RenderedExample, render_example, sample_demonstrations
from data_prep.schema import Instance, Task


def demonstration_pool(
    task: Task, k: int, source: str, train_pools: Mapping[str, Sequence[Instance]]
) -> tuple[str, Sequence[Instance]]:
    """(source used, pool) of demonstrations for `task` (see `EvalConfig.demo_source`).

    `auto` prefers the task's own few-shot examples (NI's positive examples), then its
    training instances, then its other evaluation instances (held-out tasks have no others).
    """
    candidates = {
        "demonstrations": task.demonstrations,
        "train": train_pools.get(task.name, ()),
        "task": task.instances,
    }
    if source != "auto":
        return source, candidates[source]
    for name in ("demonstrations", "train"):
        if len(candidates[name]) >= k:
            return name, candidates[name]
    return "task", candidates["task"]


def render_eval_example(
    task: Task,
    index: int,
    *,
    split: str,
    k: int,
    pool: Sequence[Instance],
    delimiter: str,
    seed: int,
    same_record: Sequence[Collection[int]] | None = None,
) -> tuple[RenderedExample, list[Instance]]:
    """The prompt of `task.instances[index]` with k demonstrations from `pool` (fewer if small).

    `same_record` is `record_links(task.instances, pool)`, computed once per task and pool by
    the caller (computed here for this one call when not given).
    """
    instance = task.instances[index]
    demos: list[Instance] = []
    if k > 0:
        if same_record is None:
            same_record = record_links(task.instances, pool)
        rng = random.Random(f"{seed}:{split}:{task.name}:{index}")
        demos = sample_demonstrations(pool, k, rng, exclude=instance, avoid=same_record[index])
    return render_example(task, instance, demonstrations=demos, delimiter=delimiter), demos
