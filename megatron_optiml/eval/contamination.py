"""Contamination report: n-gram overlap of every evaluation task with the training blend.

For each evaluation instance (input + first output, normalized as `data_prep.leak` does:
lower-case words) we ask which of its n-grams (n = 13, the paper's §2.3 check) occur anywhere in
training text, and report per task the fraction of instances sharing at least one n-gram
(the paper's measure) and the mean fraction of an instance's n-grams seen in training.
Instances shorter than n words cannot overlap and are counted as clean.

Training text comes from `<bench>/bench/train.jsonl` when data_prep wrote it
(`write_train_text`), else from decoding the train split's indexed datasets listed in
`blend.json` (the rendered text the model was actually trained on). The index is built over
the (small) evaluation side and training text is streamed past it once.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_prep.leak import normalize_text
from data_prep.pipeline import dataset_name
from data_prep.schema import Task, iter_tasks_jsonl

log = logging.getLogger(__name__)


def ngrams(text: str, n: int) -> set[int]:
    """Hashes of the word n-grams of the normalized text (hashes only compared in-process)."""
    words = normalize_text(text).split()
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def instance_text(inst) -> str:
    return inst.input + " " + (inst.outputs[0] if inst.outputs else "")


@dataclass
class TaskContamination:
    """Overlap of one evaluation task with training."""

    split: str
    task: str
    instances: int
    overlapping: int
    """Instances sharing at least one n-gram with training."""
    fraction: float
    """overlapping / instances (the paper's measure)."""
    other_fraction: float
    """Fraction of instances sharing an n-gram with training text of *another* task (for
    held-out instances of a seen task, overlap with the task's own training instances, e.g. a
    shared template, is expected; overlap with other tasks is not)."""
    mean_coverage: float
    """Mean over instances of the fraction of their n-grams found in training."""
    flagged: bool
    """`other_fraction` above the threshold: the task's text is in another task's training
    data (own-task overlap of held-out instances is reported, not flagged)."""
    train_sources: list[str] = field(default_factory=list)
    """Training tasks (or datasets) the overlapping n-grams came from, most hits first."""


def train_texts_from_bench(bench_dir: str | Path) -> Iterator[tuple[str, str]]:
    """(source name, text) of every training example of a data_prep build."""
    bench_dir = Path(bench_dir)
    train_jsonl = bench_dir / "bench" / "train.jsonl"
    if train_jsonl.exists():
        for task in iter_tasks_jsonl(train_jsonl):
            for inst in task.instances:
                yield task.name, instance_text(inst)
        return
    blend = bench_dir / "blend.json"
    if not blend.exists():
        raise FileNotFoundError(f"{bench_dir}: neither bench/train.jsonl nor blend.json")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_optiml.eval.tokens import decode

    prefixes = json.loads(blend.read_text(encoding="utf-8"))["splits"]["train"]["prefixes"]
    for prefix in prefixes:
        ds = IndexedDataset(str(bench_dir / prefix))
        name = Path(prefix).name
        for doc in range(len(ds) // 2):
            tokens = list(ds[2 * doc]) + list(ds[2 * doc + 1])
            yield name, decode(tokens)


def contamination_report(
    evals: Mapping[str, list[Task]],
    train_texts: Iterable[tuple[str, str]],
    *,
    n: int = 13,
    threshold: float = 0.01,
) -> dict[str, dict[str, TaskContamination]]:
    """`{split: {task: TaskContamination}}` for every evaluation task."""
    entries = [(split, task) for split, tasks in evals.items() for task in tasks]
    inst_grams: list[list[set[int]]] = []
    index: set[int] = set()  # every evaluation n-gram
    for _, task in entries:
        grams = [ngrams(instance_text(i), n) for i in task.instances]
        inst_grams.append(grams)
        for gs in grams:
            index.update(gs)
    found: dict[int, set[str]] = defaultdict(set)  # eval n-gram -> training sources
    if index:
        for name, text in train_texts:
            for g in ngrams(text, n):
                if g in index:
                    found[g].add(name)
    report: dict[str, dict[str, TaskContamination]] = defaultdict(dict)
    for ti, (split, task) in enumerate(entries):
        own = {task.name, dataset_name(task.benchmark, task.name)}
        grams = inst_grams[ti]
        hits = [[g for g in gs if g in found] for gs in grams]
        overlapping = sum(bool(h) for h in hits)
        other = sum(any(found[g] - own for g in h) for h in hits)
        counts: dict[str, int] = defaultdict(int)
        for h in hits:
            for g in h:
                for name in found[g]:
                    counts[name] += 1
        cover = [len(h) / len(gs) if gs else 0.0 for h, gs in zip(hits, grams)]
        num = len(grams)
        report[split][task.name] = TaskContamination(
            split=split,
            task=task.name,
            instances=num,
            overlapping=overlapping,
            fraction=overlapping / num if num else 0.0,
            other_fraction=other / num if num else 0.0,
            mean_coverage=sum(cover) / num if num else 0.0,
            flagged=(other / num if num else 0.0) > threshold,
            train_sources=[s for s, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][
                :5
            ],
        )
    for split, tasks in report.items():
        flagged = [t for t in tasks.values() if t.flagged]
        if flagged:
            log.warning(
                "%s: %d task(s) share %d-grams with other tasks' training text in > %.0f%% of instances: %s",
                split,
                len(flagged),
                n,
                100 * threshold,
                ", ".join(t.task for t in flagged[:10]),
            )
    return dict(report)


def report_to_json(report: Mapping[str, Mapping[str, TaskContamination]]) -> dict:
    return {s: {t: asdict(c) for t, c in tasks.items()} for s, tasks in report.items()}
