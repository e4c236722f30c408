"""Scores from instances up: subtask -> task -> category (and benchmark) -> split (paper §4.1).

- subtask: the instances of a task sharing an id prefix (`<prefix>:<n>`; a PromptSource
  template, a source file); a task without such ids is one subtask;
- task: mean of its subtasks (so each template counts equally, as the paper averages over
  templates);
- category / benchmark: mean of their tasks; split: mean of its categories;
- `mean` (shot-averaged): at every level, the mean over the evaluated shot counts of that
  level's score (the paper's combined 0-shot/5-shot average).

Scores are fractions in [0, 1]; reports show them times 100.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import fmean


@dataclass
class InstanceResult:
    """The score of one evaluated instance."""

    split: str
    task: str
    category: str
    benchmark: str
    shots: int
    instance_id: str
    metric: str
    """Headline metric name (`accuracy`, `rougeL`, `exact_match`)."""
    score: float
    """Headline score in [0, 1]."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Every metric computed for the instance (the headline one included)."""
    subtask: str = ""


def subtask_of(instance_id: str, task: str) -> str:
    """`ag_news_classify:4` -> `ag_news_classify`; ids without a prefix -> the task name."""
    head, sep, tail = instance_id.rpartition(":")
    return head if sep and head and tail.isdigit() else task


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: fmean(d[k] for d in dicts if k in d) for k in keys}


def aggregate(results: Iterable[InstanceResult]) -> dict:
    """Nested scores: `{split: {"shots": {str(k): level scores}, "mean": level scores}}`.

    Level scores: `{"tasks": {name: {...}}, "categories": {...}, "benchmarks": {...},
    "score": split score}`; a task holds `score`, `metric`, `metrics`, `instances`,
    `category`, `benchmark` and `subtasks` (`{name: {"score", "instances"}}`).
    """
    grouped: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    meta: dict[tuple[str, str], tuple[str, str]] = {}
    metrics: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in results:
        sub = r.subtask or subtask_of(r.instance_id, r.task)
        grouped[r.split][r.shots][r.task][sub].append(r)
        meta[(r.split, r.task)] = (r.category, r.benchmark)
        metrics[(r.split, r.task)].add(r.metric)
    out: dict = {}
    for split in sorted(grouped):
        per_shot = {}
        for shots in sorted(grouped[split]):
            tasks = {}
            for task in sorted(grouped[split][shots]):
                subs = grouped[split][shots][task]
                sub_scores = {
                    s: {"score": fmean(r.score for r in rs), "instances": len(rs)}
                    for s, rs in sorted(subs.items())
                }
                sub_metrics = [_mean_dicts([r.metrics for r in rs]) for rs in subs.values()]
                category, benchmark = meta[(split, task)]
                tasks[task] = {
                    "score": fmean(v["score"] for v in sub_scores.values()),
                    # A template task may rank-classify some templates (a label set) and
                    # generate for others: its score averages both, and says so.
                    "metric": "+".join(sorted(metrics[(split, task)])),
                    "metrics": _mean_dicts(sub_metrics),
                    "instances": sum(v["instances"] for v in sub_scores.values()),
                    "category": category,
                    "benchmark": benchmark,
                    "subtasks": sub_scores,
                }
            per_shot[str(shots)] = _levels(tasks)
        out[split] = {"shots": per_shot, "mean": _shot_mean(per_shot)}
    return out


def _group(tasks: dict, key: str) -> dict:
    members: dict[str, list[str]] = defaultdict(list)
    for name, t in tasks.items():
        members[t[key]].append(name)
    return {
        g: {"score": fmean(tasks[n]["score"] for n in names), "tasks": sorted(names)}
        for g, names in sorted(members.items())
    }


def _levels(tasks: dict) -> dict:
    categories = _group(tasks, "category")
    return {
        "tasks": tasks,
        "categories": categories,
        "benchmarks": _group(tasks, "benchmark"),
        "score": fmean(c["score"] for c in categories.values()),
    }


def _shot_mean(per_shot: dict) -> dict:
    """Mean over shot counts of each level's score (only entries present for every count)."""
    levels = list(per_shot.values())

    def mean_of(level: str) -> dict:
        names = set.intersection(*(set(lv[level]) for lv in levels))
        return {n: {"score": fmean(lv[level][n]["score"] for lv in levels)} for n in sorted(names)}

    return {
        "tasks": mean_of("tasks"),
        "categories": mean_of("categories"),
        "benchmarks": mean_of("benchmarks"),
        "score": fmean(lv["score"] for lv in levels),
        "shots": sorted(int(k) for k in per_shot),
    }
