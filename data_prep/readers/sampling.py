"""Per-task template down-sampling (paper §4.1).

A task with N examples and T templates has N x T prompted instances. OPT-IML merges all of a
task's templates into one pool and randomly takes N prompted instances from it, so a task's
size (and its share under examples-proportional sampling) does not grow with its number of
templates. `sample_prompted` does that draw, seeded by the build's seed and the task name.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from data_prep.config import TEMPLATE_SAMPLING
from data_prep.schema import Instance

log = logging.getLogger(__name__)
PAPER, ALL = TEMPLATE_SAMPLING


def sample_prompted(
    instances: Sequence[Instance], n: int, *, task: str, seed: int, templates: int
) -> list[Instance]:
    """`n` of `instances` (every template of `task`, merged) drawn without replacement.

    The kept instances stay in their original order; the draw depends only on `seed`, `task`
    and the pool's size.
    """
    if n >= len(instances):
        return list(instances)
    rng = random.Random(f"{seed}:templates:{task}")
    keep = sorted(rng.sample(range(len(instances)), n))
    log.info(
        "task %s: kept %d of %d prompted instances (%d templates, paper §4.1)",
        task,
        n,
        len(instances),
        templates,
    )
    return [instances[i] for i in keep]
