"""Per-task template down-sampling of the training split (paper §4.1).

A task with N examples and T templates has N x T prompted instances. OPT-IML merges all of a
task's templates into one pool and randomly takes N prompted instances from it, so a task's
size (and its share under examples-proportional sampling) does not grow with its number of
templates. Evaluation keeps every template (the paper's test sets: all templates, all examples;
validation: at most 250 prompted examples per task, `splits.max_eval_instances`), so only the
train split is down-sampled, after the instance split.

The template readers (`promptsource`, `jinja`, `flan`) give every instance the id
`<template>:<line>`. N is the largest number of a task's training instances from one template:
a template applies to every record of its dataset (the paper drops the ones that do not), and
the applied PromptSource files carry no record ids to count records by.
"""

from __future__ import annotations

import logging
import random

from data_prep.schema import Instance, Task

log = logging.getLogger(__name__)


def template_of(inst: Instance) -> str:
    """The template an instance of a template source was made with (its id is `<template>:<line>`)."""
    return inst.id.rsplit(":", 1)[0]


def examples_per_template(task: Task) -> dict[str, int]:
    """Instances of `task` per template, in first-seen order."""
    counts: dict[str, int] = {}
    for inst in task.instances:
        t = template_of(inst)
        counts[t] = counts.get(t, 0) + 1
    return counts


def sample_templates(task: Task, *, seed: int) -> Task:
    """`task` with N of its prompted instances (all templates merged), drawn without replacement.

    N = the largest per-template count. The kept instances stay in their order; the draw uses
    `random.Random(f"{seed}:templates:{task.name}")` only, so it is the same on every run and
    independent of other tasks.
    """
    counts = examples_per_template(task)
    n = max(counts.values(), default=0)
    if n >= len(task.instances):
        return task
    rng = random.Random(f"{seed}:templates:{task.name}")
    keep = sorted(rng.sample(range(len(task.instances)), n))
    log.info(
        "task %s: kept %d of %d prompted training instances (%d templates, paper §4.1)",
        task.name,
        n,
        len(task.instances),
        len(counts),
    )
    return task.with_instances([task.instances[i] for i in keep])
