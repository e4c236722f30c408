"""Evaluation prompts: the training renderer (`data_prep.render.render_example`) plus a fixed,
seeded choice of k demonstrations that never includes the instance itself.

Evaluation uses one fixed delimiter (`EvalConfig.delimiter`, default "\\nAnswer:", one of the
delimiters training samples from) so that scores do not depend on a draw, and the same
demonstrations for every model (the draw is seeded by split, task and instance index).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

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
) -> tuple[RenderedExample, list[Instance]]:
    """The prompt of `task.instances[index]` with k demonstrations from `pool` (fewer if small)."""
    instance = task.instances[index]
    demos: list[Instance] = []
    if k > 0:
        rng = random.Random(f"{seed}:{split}:{task.name}:{index}")
        demos = sample_demonstrations(pool, k, rng, exclude=instance)
    return render_example(task, instance, demonstrations=demos, delimiter=delimiter), demos
