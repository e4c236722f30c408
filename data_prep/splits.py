"""The three generalization splits of the OPT-IML Bench (paper §2.3), deterministic given a seed.

- `heldout_category` (fully held-out): every task of a held-out category;
- `heldout_task` (partially supervised): held-out tasks of categories seen in training;
- `heldout_instance` (fully supervised): held-out instances of training tasks;
- `validation`: further held-out instances of training tasks, for the trainer's validation loss;
- `train`: the rest.

Instances with the same normalized input are kept together (grouped by hash), so duplicates
inside a task can never land on both sides of an instance split.

A held-out task whose category ends up with no training task is not partially supervised: it
is moved to `heldout_category` with a warning naming it. A split that leaves no training
instance at all is an error.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from data_prep.config import SplitConfig
from data_prep.leak import Digest, digest_input
from data_prep.schema import Task

log = logging.getLogger(__name__)

TRAIN = "train"
VALIDATION = "validation"
HELDOUT_CATEGORY = "heldout_category"
HELDOUT_TASK = "heldout_task"
HELDOUT_INSTANCE = "heldout_instance"
EVAL_SPLITS = (HELDOUT_CATEGORY, HELDOUT_TASK, HELDOUT_INSTANCE)
ALL_SPLITS = (TRAIN, VALIDATION, *EVAL_SPLITS)


@dataclass
class BenchSplits:
    """Tasks per split; a task name appears at most once per split."""

    splits: dict[str, list[Task]] = field(default_factory=lambda: {s: [] for s in ALL_SPLITS})

    def __getitem__(self, split: str) -> list[Task]:
        return self.splits[split]

    def evals(self) -> dict[str, list[Task]]:
        """Every split that must not leak into train (validation and the three eval splits)."""
        return {s: self.splits[s] for s in (VALIDATION, *EVAL_SPLITS)}


def _count(fraction: float, n: int) -> int:
    return int(fraction * n + 0.5)


def _cap(task: Task, cap: int | None, rng: random.Random) -> Task:
    if cap is None or len(task.instances) <= cap:
        return task
    keep = sorted(rng.sample(range(len(task.instances)), cap))
    return task.with_instances([task.instances[i] for i in keep])


def split_tasks(
    tasks: list[Task],
    cfg: SplitConfig,
    *,
    train_only: set[str] = frozenset(),
    digest: Digest = digest_input,
) -> BenchSplits:
    """Assign tasks and instances to splits. Raises ValueError for names the data lacks.

    `digest` gives an instance's normalized-input digest (the pipeline passes precomputed ones).
    """
    categories = {t.category for t in tasks}
    names = {t.name for t in tasks}
    for c in cfg.heldout_categories:
        if c not in categories:
            raise ValueError(f"splits.heldout_categories: {c!r} is not the category of any task")
    for n in cfg.heldout_tasks:
        if n not in names:
            raise ValueError(f"splits.heldout_tasks: {n!r} is not a task")
    held_cats = set(cfg.heldout_categories)
    for n in cfg.heldout_tasks:
        cat = next(t.category for t in tasks if t.name == n)
        if cat in held_cats:
            raise ValueError(f"splits.heldout_tasks: {n!r} is in held-out category {cat!r}")

    out = BenchSplits()
    by_name = {t.name: t for t in sorted(tasks, key=lambda t: t.name)}
    eval_rng = random.Random(f"{cfg.seed}:eval-cap")

    # Partially held-out: explicit tasks, plus a fraction of each seen category's tasks.
    held_tasks = set(cfg.heldout_tasks)
    if cfg.heldout_task_fraction > 0:
        by_cat: dict[str, list[str]] = {}
        for name, t in by_name.items():
            if t.category not in held_cats and name not in train_only:
                by_cat.setdefault(t.category, []).append(name)
        for cat, cat_tasks in sorted(by_cat.items()):
            free = [n for n in cat_tasks if n not in held_tasks]
            k = min(_count(cfg.heldout_task_fraction, len(cat_tasks)), len(free) - 1)
            if k > 0:
                held_tasks.update(random.Random(f"{cfg.seed}:tasks:{cat}").sample(free, k))

    for name, task in by_name.items():
        if name in train_only:
            out[TRAIN].append(task)
        elif task.category in held_cats:
            out[HELDOUT_CATEGORY].append(_cap(task, cfg.max_eval_instances, eval_rng))
        elif name in held_tasks:
            out[HELDOUT_TASK].append(_cap(task, cfg.max_eval_instances, eval_rng))
        else:
            train, val, held = _split_instances(task, cfg, digest)
            out[TRAIN].append(task.with_instances(train))
            if val:
                out[VALIDATION].append(task.with_instances(val))
            if held:
                out[HELDOUT_INSTANCE].append(
                    _cap(task.with_instances(held), cfg.max_eval_instances, eval_rng)
                )
    _relabel_unsupervised(out)
    if not any(t.instances for t in out[TRAIN]):
        raise ValueError(
            "splits: every task is held out, the train split is empty (held-out categories "
            f"{sorted(held_cats)}, {len(held_tasks)} held-out tasks of {len(tasks)} tasks)"
        )
    for s in ALL_SPLITS:
        log.info(
            "split %-16s %4d tasks %8d instances",
            s,
            len(out[s]),
            sum(len(t.instances) for t in out[s]),
        )
    return out


def _relabel_unsupervised(out: BenchSplits) -> None:
    """Move held-out tasks whose category has no training task to `heldout_category`.

    `heldout_task` means partially supervised (paper §2.3): unseen tasks of categories seen in
    training. When every task of a category is held out (listed in `splits.heldout_tasks`),
    the category is unseen and its tasks are fully held out; reporting them as partially
    supervised would credit the tuning with a transfer it never had the chance to make.
    """
    seen = {t.category for t in out[TRAIN] if t.instances}
    moved = [t for t in out[HELDOUT_TASK] if t.category not in seen]
    if not moved:
        return
    for cat in sorted({t.category for t in moved}):
        log.warning(
            "splits.heldout_tasks: category %r has no training task, so %s are fully held out: "
            "moved to %s (list the category in splits.heldout_categories to say so)",
            cat,
            ", ".join(t.name for t in moved if t.category == cat),
            HELDOUT_CATEGORY,
        )
    out.splits[HELDOUT_TASK] = [t for t in out[HELDOUT_TASK] if t.category in seen]
    out.splits[HELDOUT_CATEGORY] = sorted(out[HELDOUT_CATEGORY] + moved, key=lambda t: t.name)


def _split_instances(task: Task, cfg: SplitConfig, digest: Digest) -> tuple[list, list, list]:
    if cfg.validation_fraction == 0 and cfg.heldout_instance_fraction == 0:
        return list(task.instances), [], []  # nothing to hold out: no need to hash
    groups: dict[bytes, list[int]] = {}
    for i, inst in enumerate(task.instances):
        groups.setdefault(digest(inst), []).append(i)
    order = sorted(groups)  # hash order: independent of file order, stable across runs
    random.Random(f"{cfg.seed}:instances:{task.name}").shuffle(order)
    n_val = _count(cfg.validation_fraction, len(order))
    n_held = _count(cfg.heldout_instance_fraction, len(order))
    if n_val + n_held >= len(order):  # tiny task: keep at least one group for training
        n_val, n_held = 0, 0
    pick = {
        "val": {i for h in order[:n_val] for i in groups[h]},
        "held": {i for h in order[n_val : n_val + n_held] for i in groups[h]},
    }
    train, val, held = [], [], []
    for i, inst in enumerate(task.instances):
        (val if i in pick["val"] else held if i in pick["held"] else train).append(inst)
    return train, val, held
