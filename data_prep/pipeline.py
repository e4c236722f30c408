"""The whole bench build: read -> map -> split -> leak check -> write text -> tokenize -> blend.

Everything is written into `<out>.partial/` and renamed to `<out>` at the very end, so a killed
run leaves no half-written output behind, and a rerun gives byte-identical files.

Parallel layout (`tokenize.workers` processes, one pool for the whole build, forked right after
reading so the workers inherit the tasks; see `data_prep.workers`):

1. read + map (main process; parsing costs about what pickling the result back would);
2. normalized-input digests per task (workers; skipped when the config holds nothing out);
3. splits, template down-sampling of the train split (paper §4.1) and the exact-leak policy on
   the digests (main; dictionary work only);
4. per evaluation/validation task: its JSON line and its 13-gram hashes (workers); the main
   process writes the text files and sorts the n-grams into one index;
5. per chunk of a training task: the evaluation instances it shares a 13-gram with (workers);
6. per chunk of a train/validation task: render + tokenize (workers); the main process appends
   the token arrays to each task's `.bin` and writes its `.idx`;
7. blend and summary (main).

Output layout::

    <out>/bench/{validation,heldout_category,heldout_task,heldout_instance}.jsonl   task JSONL
    <out>/indexed/{train,validation}/<benchmark>__<task>.{bin,idx}               Megatron datasets
    <out>/blend.json, data_args_{train,validation}.txt                           sampling weights
    <out>/summary.md, summary.json                                               tables, counts
    <out>/reports/{leaks,task_pair_overlap}.json                                 leakage reports
    <out>/splits.json                                                            tasks per split
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.blend import (
    DatasetEntry,
    blend_weights,
    format_table,
    summary_rows,
    write_blend,
)
from data_prep.config import BenchConfig, SplitConfig
from data_prep.leak import (
    Digest,
    EvalEntry,
    Leak,
    NgramIndex,
    PairOverlap,
    digest_input,
    digest_lookup,
    enforce_leak_policy,
    input_digests,
    ngram_hashes,
    sort_pairs,
)
from data_prep.mapping import load_task_map
from data_prep.plan import PlannedJobs, SplitPlan, dataset_name
from data_prep.readers import read_all
from data_prep.render import ShotPolicy
from data_prep.sampling import sample_templates
from data_prep.schema import Task, task_jsonl_line, write_jsonl_lines
from data_prep.splits import EVAL_SPLITS, TRAIN, VALIDATION, BenchSplits, split_tasks
from data_prep.tokenize import Job, RenderSpec, TokenizeStats, write_indexed_datasets
from data_prep.workers import Shared, WorkerPool, progress_bar

__all__ = ["BuildResult", "build_bench", "dataset_name", "render_spec"]
log = logging.getLogger(__name__)
MARKER = ".optiml_bench"
TOKENIZED_SPLITS = (TRAIN, VALIDATION)


@dataclass
class BuildResult:
    out_dir: Path
    splits: BenchSplits
    stats: TokenizeStats
    summary: dict
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage (read, digest, split, text, overlap, tokenize, blend)."""


def render_spec(cfg: BenchConfig) -> RenderSpec:
    r = cfg.render
    return RenderSpec(
        seed=cfg.seed,
        delimiters=tuple(r.delimiters),
        shots=ShotPolicy(k=r.shots, zipf_a=r.zipf_a, max_k=r.max_shots),
        demo_separator=r.demo_separator,
        max_seq_length=r.max_seq_length,
    )


def holds_out_anything(cfg: SplitConfig) -> bool:
    """Whether any split but train can get instances (else inputs need no digests)."""
    return bool(
        cfg.heldout_categories
        or cfg.heldout_tasks
        or cfg.heldout_task_fraction > 0
        or cfg.heldout_instance_fraction > 0
        or cfg.validation_fraction > 0
    )


class _Clock:
    """Wall seconds per stage, logged as they finish."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._t
        log.info("stage %-8s %6.2f s", stage, now - self._t)
        self._t = now


def build_bench(
    cfg: BenchConfig, out_dir: str | os.PathLike, *, progress: bool = True
) -> BuildResult:
    """Build the bench from `cfg` into `out_dir` (replaced if it holds an earlier build)."""
    out = Path(out_dir).resolve()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(f"{out} exists and is not a bench build; refusing to replace it")
    stage = out.with_name(out.name + ".partial")
    if stage.exists():
        shutil.rmtree(stage)  # leftovers of a killed run
    stage.mkdir(parents=True)
    try:
        return _build_into(stage, out, cfg, progress)
    except BaseException:
        # A failed build (bad input, full disk, Ctrl-C) leaves nothing behind; an earlier
        # complete build in `out` is only ever replaced by the final rename.
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _build_into(stage: Path, out: Path, cfg: BenchConfig, progress: bool) -> BuildResult:
    """Write the whole build into `stage`, then rename it to `out`."""
    clock = _Clock()

    task_map = load_task_map(cfg.task_map)
    read = read_all(cfg.sources, task_map)
    tasks, train_only = read.tasks, read.train_only
    log.info("read %d tasks, %d instances", len(tasks), sum(len(t.instances) for t in tasks))
    clock.lap("read")

    with WorkerPool(cfg.tokenize.workers, tasks=tasks) as pool:
        tasks_h = pool.inherited["tasks"]
        digest = _digests(pool, tasks_h, tasks, cfg, progress)
        clock.lap("digest")
        splits = split_tasks(tasks, cfg.splits, train_only=train_only, digest=digest)
        splits.splits[TRAIN] = [
            sample_templates(t, seed=cfg.seed) if t.name in read.template_sampled else t
            for t in splits[TRAIN]
        ]
        splits.splits[TRAIN], leaks = enforce_leak_policy(
            splits[TRAIN], splits.evals(), cfg.leak.policy, digest=digest
        )
        plan = SplitPlan.of(tasks, splits)
        plan_h = pool.share("plan", plan)
        clock.lap("split")

        # Text of the evaluation splits (and validation) for evaluation code; eval 13-grams.
        text_splits = (VALIDATION, *EVAL_SPLITS) + ((TRAIN,) if cfg.write_train_text else ())
        index = _write_text(pool, tasks_h, plan_h, splits, text_splits, stage, cfg, progress)
        clock.lap("text")
        pairs = _overlap_pairs(pool, tasks_h, plan_h, splits, index, cfg, progress)
        for p in pairs[:20]:
            log.warning(
                "%d-gram overlap %.1f%%: eval %s/%s <- train %s",
                cfg.leak.ngram,
                100 * p.fraction,
                p.eval_split,
                p.eval_task,
                p.train_task,
            )
        clock.lap("overlap")

        # Tokenize train and validation into indexed datasets.
        jobs = PlannedJobs(tasks_h, plan_h, stage / "indexed", TOKENIZED_SPLITS)
        stats = write_indexed_datasets(
            jobs,
            render_spec(cfg),
            chunk_size=cfg.tokenize.chunk_size,
            progress=progress,
            pool=pool,
        )
        jobs = list(jobs)  # built in this process; usable once the pool is gone
        clock.lap("tokenize")

    _write_reports(stage, splits, leaks, pairs)
    summary = _write_blend_and_summary(stage, cfg, splits, jobs, stats, leaks, pairs)
    (stage / MARKER).write_text("", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    clock.lap("blend")
    log.info(
        "wrote %s: %d examples, %d tokens in %.1f s (%.0f tok/s)",
        out,
        stats.examples,
        stats.tokens,
        stats.seconds,
        stats.tokens / max(stats.seconds, 1e-9),
    )
    return BuildResult(
        out_dir=out, splits=splits, stats=stats, summary=summary, timings=clock.timings
    )


# --- worker functions (module level: the pool calls them by name) -------------------------


def _digest_task(item: tuple[Shared, int]) -> bytes:
    tasks, n = item
    return input_digests(tasks.get()[n].instances)


def _text_item(
    item: tuple[Shared, Shared, str, int, int | None],
) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    tasks, plan, split, k, ngram = item
    task = plan.get().task(tasks.get(), split, k)
    if ngram is None:
        return task_jsonl_line(task), None, None
    hashes, owners = ngram_hashes(task.instances, ngram)
    return task_jsonl_line(task), hashes, owners


def _overlap_item(item: tuple[Shared, Shared, Shared, int, int, int, int]) -> np.ndarray:
    tasks, plan, index, k, start, end, ngram = item
    hashes, _ = ngram_hashes(plan.get().instances(tasks.get(), TRAIN, k, start, end), ngram)
    return index.get().hit_instances(hashes)


# --- stages -------------------------------------------------------------------------------


def _digests(
    pool: WorkerPool, tasks_h: Shared, tasks: Sequence[Task], cfg: BenchConfig, progress: bool
) -> Digest:
    """Precomputed input digests (workers), or none when nothing is held out."""
    if not holds_out_anything(cfg.splits):
        return digest_input  # never called: no split to compare against
    bar = progress_bar(sum(len(t.instances) for t in tasks), "hash inputs", progress)
    blobs = []
    for n, blob in enumerate(pool.imap(_digest_task, ((tasks_h, n) for n in range(len(tasks))))):
        blobs.append(blob)
        if bar is not None:
            bar.update(len(tasks[n].instances))
    if bar is not None:
        bar.close()
    return digest_lookup(tasks, blobs)


def _write_text(
    pool: WorkerPool,
    tasks_h: Shared,
    plan_h: Shared,
    splits: BenchSplits,
    text_splits: Sequence[str],
    stage: Path,
    cfg: BenchConfig,
    progress: bool,
) -> NgramIndex:
    """Write `bench/<split>.jsonl` of `text_splits` (workers make the lines); return the n-gram
    index of the evaluation splits (empty when there is no train or no evaluation task)."""
    want_ngrams = bool(splits[TRAIN]) and any(splits[s] for s in EVAL_SPLITS)
    keys = [(s, k) for s in text_splits for k in range(len(splits[s]))]
    items = (
        (tasks_h, plan_h, s, k, cfg.leak.ngram if want_ngrams and s in EVAL_SPLITS else None)
        for s, k in keys
    )
    lines: dict[str, list[str]] = {s: [] for s in text_splits}
    parts = []
    bar = progress_bar(sum(len(splits[s][k].instances) for s, k in keys), "eval text", progress)
    for (s, k), (line, hashes, owners) in zip(keys, pool.imap(_text_item, items)):
        lines[s].append(line)
        task = splits[s][k]
        if hashes is not None:
            parts.append((EvalEntry(s, task.name, len(task.instances)), hashes, owners))
        if bar is not None:
            bar.update(len(task.instances))
    if bar is not None:
        bar.close()
    for s in text_splits:
        write_jsonl_lines(lines[s], stage / "bench" / f"{s}.jsonl")
    return NgramIndex.build(parts)


def _overlap_pairs(
    pool: WorkerPool,
    tasks_h: Shared,
    plan_h: Shared,
    splits: BenchSplits,
    index: NgramIndex,
    cfg: BenchConfig,
    progress: bool,
) -> list[PairOverlap]:
    """Task pairs above the n-gram overlap threshold (a task's own held-out instances aside)."""
    if not len(index):
        return []
    index_h = pool.share("ngram_index", index)
    chunk, n = cfg.tokenize.chunk_size, cfg.leak.ngram
    keys = [
        (k, start, min(len(t.instances), start + chunk))
        for k, t in enumerate(splits[TRAIN])
        for start in range(0, len(t.instances), chunk)
    ]
    items = ((tasks_h, plan_h, index_h, k, s, e, n) for k, s, e in keys)
    bar = progress_bar(sum(e - s for _, s, e in keys), f"{n}-gram check", progress)
    hits: dict[int, list[np.ndarray]] = {}
    for (k, s, e), found in zip(keys, pool.imap(_overlap_item, items)):
        hits.setdefault(k, []).append(found)
        if bar is not None:
            bar.update(e - s)
    if bar is not None:
        bar.close()
    pairs: list[PairOverlap] = []
    for k, found in hits.items():
        name = splits[TRAIN][k].name
        pairs += index.pairs(name, np.unique(np.concatenate(found)), cfg.leak.pair_threshold)
    # held-out instances of a task overlap their own task
    return [p for p in sort_pairs(pairs) if p.eval_task != p.train_task]


def _write_reports(
    stage: Path, splits: BenchSplits, leaks: list[Leak], pairs: list[PairOverlap]
) -> None:
    reports = stage / "reports"
    reports.mkdir()
    _write_json(reports / "leaks.json", [dataclasses.asdict(lk) for lk in leaks])
    _write_json(reports / "task_pair_overlap.json", [dataclasses.asdict(p) for p in pairs])
    _write_json(
        stage / "splits.json",
        {s: [t.name for t in splits[s]] for s in splits.splits},
    )


def _write_blend_and_summary(
    stage: Path,
    cfg: BenchConfig,
    splits: BenchSplits,
    jobs: Sequence[Job],
    stats: TokenizeStats,
    leaks: list[Leak],
    pairs: list[PairOverlap],
) -> dict:
    per_split = {}
    tables = []
    summary: dict = {"splits": {}, "benchmarks": {}, "categories": {}}
    for split in TOKENIZED_SPLITS:
        entries = [
            DatasetEntry(
                prefix=str(job.prefix.relative_to(stage)),
                task=job.task.name,
                benchmark=job.task.benchmark,
                category=job.task.category,
                num_examples=st.examples,
                num_tokens=st.prompt_tokens + st.target_tokens,
                longest=st.longest,
            )
            for job, st in zip(jobs, stats.per_job)
            if job.split == split
        ]
        weights = blend_weights(
            entries,
            eps_cap=cfg.blend.eps_cap,
            benchmark_shares=cfg.blend.benchmark_shares,
            benchmark_caps=cfg.blend.benchmark_caps,
        )
        per_split[split] = (entries, weights)
        for key in ("benchmark", "category"):
            rows = summary_rows(entries, weights, key)
            summary["categories" if key == "category" else "benchmarks"][split] = rows
            tables.append(f"### {split}: per {key}\n\n{format_table(rows, key)}\n")
    write_blend(
        stage,
        per_split,
        eps_cap=cfg.blend.eps_cap,
        benchmark_shares=cfg.blend.benchmark_shares,
        max_seq_length=cfg.render.max_seq_length,
    )

    for split in splits.splits:
        summary["splits"][split] = {
            "tasks": len(splits[split]),
            "instances": sum(len(t.instances) for t in splits[split]),
        }
    summary["truncated_examples"] = sum(s.truncated for s in stats.per_job)
    summary["target_truncated_examples"] = sum(s.target_truncated for s in stats.per_job)
    summary["exact_leaks"] = len(leaks)
    summary["overlapping_task_pairs"] = len(pairs)
    _write_json(stage / "summary.json", summary)
    split_lines = "\n".join(
        f"| {s} | {v['tasks']} | {v['instances']:,} |" for s, v in summary["splits"].items()
    )
    md = (
        "# OPT-IML Bench build summary\n\n| split | tasks | instances |\n|---|---:|---:|\n"
        f"{split_lines}\n\n"
        + "\n".join(tables)
        + f"\nTruncated (from the left): {summary['truncated_examples']} examples "
        f"({summary['target_truncated_examples']} with the target itself cut).\n"
        f"Exact train/eval input duplicates: {len(leaks)} (policy {cfg.leak.policy}). "
        f"Task pairs above {100 * cfg.leak.pair_threshold:g}% {cfg.leak.ngram}-gram overlap: "
        f"{len(pairs)} (reports/task_pair_overlap.json).\n"
    )
    (stage / "summary.md").write_text(md, encoding="utf-8")
    log.info("\n%s", md)
    return summary


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
