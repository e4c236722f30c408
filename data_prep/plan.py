"""The splits in index form, so worker processes can rebuild any task of any split cheaply.

Workers inherit the tasks as read (see `data_prep.workers`); a `SplitPlan` says which source
task and which of its instances make up each task of each split, so it pickles to a few
integer arrays instead of the instance text. `PlannedJobs` turns the plan into the tokenizer's
`Job`s on either side of the pool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.schema import Instance, Task
from data_prep.splits import TRAIN, BenchSplits
from data_prep.tokenize import Job
from data_prep.workers import Shared


def dataset_name(benchmark: str, task: str) -> str:
    """`<benchmark>__<task>` with characters unsafe in file names replaced by "_"."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{benchmark}__{task}")


@dataclass
class SplitPlan:
    """Per split, its tasks as (position of the source task, positions of its instances)."""

    splits: dict[str, list[tuple[int, np.ndarray]]]

    @classmethod
    def of(cls, tasks: Sequence[Task], splits: BenchSplits) -> SplitPlan:
        """The plan of `splits`, whose tasks hold instances of `tasks` (found by identity)."""
        number = {t.name: k for k, t in enumerate(tasks)}
        position = {id(inst): i for t in tasks for i, inst in enumerate(t.instances)}
        plan = {
            split: [
                (
                    number[t.name],
                    np.fromiter(
                        (position[id(inst)] for inst in t.instances),
                        dtype=np.int64,
                        count=len(t.instances),
                    ),
                )
                for t in entries
            ]
            for split, entries in splits.splits.items()
        }
        return cls(plan)

    def __post_init__(self) -> None:
        self._train_of: dict[str, int] = {}

    def size(self, split: str, k: int) -> int:
        return len(self.splits[split][k][1])

    def instances(
        self, tasks: Sequence[Task], split: str, k: int, start: int = 0, end: int | None = None
    ) -> list[Instance]:
        """Instances [start, end) of the k-th task of `split`."""
        n, positions = self.splits[split][k]
        source = tasks[n].instances
        return [source[i] for i in positions[start:end].tolist()]

    def task(self, tasks: Sequence[Task], split: str, k: int) -> Task:
        """The k-th task of `split`, as `split_tasks` made it."""
        return tasks[self.splits[split][k][0]].with_instances(self.instances(tasks, split, k))

    def train_position(self, tasks: Sequence[Task], name: str) -> int | None:
        """Where task `name` is in the train split (None when it is not there)."""
        if not self._train_of:
            self._train_of = {tasks[n].name: k for k, (n, _) in enumerate(self.splits[TRAIN])}
        return self._train_of.get(name)


class PlannedJobs(Sequence[Job]):
    """The tokenizer's jobs (train and validation tasks), built from the plan on first use.

    Pickles to the two handles and the job keys; each process rebuilds (and keeps) the jobs it
    touches. The k-shot demonstration pool of a task is its training instances.
    """

    def __init__(self, tasks: Shared, plan: Shared, root: Path, splits: Sequence[str]) -> None:
        self._tasks, self._plan, self._root = tasks, plan, Path(root)
        p = plan.get()
        self.keys = [(split, k) for split in splits for k in range(len(p.splits[split]))]
        self._cache: dict[int, Job] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, j: int) -> Job:  # type: ignore[override]
        job = self._cache.get(j)
        if job is None:
            split, k = self.keys[j]  # IndexError ends iteration
            tasks, plan = self._tasks.get(), self._plan.get()
            task = plan.task(tasks, split, k)
            train_k = plan.train_position(tasks, task.name)
            pool = () if train_k is None else plan.instances(tasks, TRAIN, train_k)
            prefix = self._root / split / dataset_name(task.benchmark, task.name)
            job = self._cache[j] = Job(split=split, task=task, prefix=prefix, pool=pool)
        return job

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}
