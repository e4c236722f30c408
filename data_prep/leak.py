"""Train/eval leakage: exact duplicates of normalized inputs, and the paper's 13-gram task-pair check.

Paper §2.3: for every (train task, eval task) pair, the fraction of the eval task's examples
that share any 13-gram with the train task's instantiated sequences; pairs above 1% were
examined by hand. We compute the same fractions over words of the normalized text
(input + first output) and report the pairs above the threshold.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from data_prep.errors import DataError
from data_prep.schema import Instance, Task

log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower case words joined by single spaces: punctuation, case and spacing do not count."""
    return " ".join(_WORD.findall(text.lower()))


def input_hash(text: str) -> str:
    """A stable 128-bit hash of the normalized text."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Leak:
    """An evaluation instance whose normalized input also occurs in training."""

    split: str
    task: str
    instance_id: str
    train_tasks: tuple[str, ...]


def find_exact_leaks(train: Iterable[Task], evals: dict[str, list[Task]]) -> list[Leak]:
    """Eval instances (by split) whose normalized input is also a training input."""
    seen: dict[str, set[str]] = defaultdict(set)
    for task in train:
        for inst in task.instances:
            seen[input_hash(inst.input)].add(task.name)
    leaks = []
    for split, tasks in evals.items():
        for task in tasks:
            for inst in task.instances:
                owners = seen.get(input_hash(inst.input))
                if owners:
                    leaks.append(Leak(split, task.name, inst.id, tuple(sorted(owners))))
    return leaks


def enforce_leak_policy(
    train: list[Task], evals: dict[str, list[Task]], policy: str
) -> tuple[list[Task], list[Leak]]:
    """Apply `policy` (error | report | drop) to exact leaks; returns (train tasks, leaks)."""
    leaks = find_exact_leaks(train, evals)
    if not leaks:
        return train, leaks
    examples = "; ".join(
        f"{lk.split}/{lk.task} instance {lk.instance_id!r} also in train task(s) {', '.join(lk.train_tasks)}"
        for lk in leaks[:5]
    )
    if policy == "error":
        raise DataError(
            f"{len(leaks)} evaluation instance(s) also appear in training: {examples}"
            " (set leak.policy to 'report' or 'drop' to go on)"
        )
    log.warning("%d evaluation instance(s) also appear in training: %s", len(leaks), examples)
    if policy == "drop":
        eval_hashes = {
            input_hash(inst.input)
            for tasks in evals.values()
            for t in tasks
            for inst in t.instances
        }
        new_train = []
        for task in train:
            kept = [i for i in task.instances if input_hash(i.input) not in eval_hashes]
            if len(kept) != len(task.instances):
                log.warning(
                    "dropped %d leaked instance(s) from train task %s",
                    len(task.instances) - len(kept),
                    task.name,
                )
            if kept:
                new_train.append(task.with_instances(kept))
        train = new_train
    return train, leaks


def _ngrams(text: str, n: int) -> set[int]:
    words = normalize_text(text).split()
    # Python's str hash is salted per process; only counts come out of this, so the salt can
    # change nothing but (vanishingly rare) collisions.
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def _instance_text(inst: Instance) -> str:
    return inst.input + " " + (inst.outputs[0] if inst.outputs else "")


@dataclass(frozen=True)
class PairOverlap:
    """Fraction of an eval task's examples with any n-gram shared with a train task."""

    eval_split: str
    eval_task: str
    train_task: str
    fraction: float
    examples: int


def task_pair_overlap(
    train: Iterable[Task], evals: dict[str, list[Task]], *, n: int = 13, threshold: float = 0.01
) -> list[PairOverlap]:
    """(train task, eval task) pairs whose overlap fraction is above `threshold`, largest first.

    The index is built over the evaluation side (usually far smaller than training); each
    training instance is then streamed past it once.
    """
    eval_tasks = [(split, task) for split, tasks in evals.items() for task in tasks]
    index: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for ei, (_, task) in enumerate(eval_tasks):
        for ii, inst in enumerate(task.instances):
            for g in _ngrams(_instance_text(inst), n):
                index[g].add((ei, ii))
    pairs = []
    if not index:
        return pairs
    for train_task in train:
        hit: set[tuple[int, int]] = set()
        for inst in train_task.instances:
            for g in _ngrams(_instance_text(inst), n):
                keys = index.get(g)
                if keys:
                    hit |= keys
        per_eval: dict[int, int] = defaultdict(int)
        for ei, _ in hit:
            per_eval[ei] += 1
        for ei, count in per_eval.items():
            split, task = eval_tasks[ei]
            frac = count / len(task.instances)
            if frac > threshold:
                pairs.append(PairOverlap(split, task.name, train_task.name, frac, count))
    pairs.sort(key=lambda p: (-p.fraction, p.eval_split, p.eval_task, p.train_task))
    return pairs
