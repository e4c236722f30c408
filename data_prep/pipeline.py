"""The whole bench build: read -> map -> split -> leak check -> write text -> tokenize -> blend.

Everything is written into `<out>.partial/` and renamed to `<out>` at the very end, so a killed
run leaves no half-written output behind, and a rerun gives byte-identical files.

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
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from data_prep.blend import (
    DatasetEntry,
    blend_weights,
    format_table,
    summary_rows,
    write_blend,
)
from data_prep.config import BenchConfig
from data_prep.leak import enforce_leak_policy, task_pair_overlap
from data_prep.mapping import load_task_map
from data_prep.readers import read_sources
from data_prep.render import ShotPolicy
from data_prep.schema import write_tasks_jsonl
from data_prep.splits import EVAL_SPLITS, TRAIN, VALIDATION, BenchSplits, split_tasks
from data_prep.tokenize import Job, RenderSpec, TokenizeStats, write_indexed_datasets

log = logging.getLogger(__name__)
MARKER = ".optiml_bench"
TOKENIZED_SPLITS = (TRAIN, VALIDATION)


def dataset_name(benchmark: str, task: str) -> str:
    """`<benchmark>__<task>` with characters unsafe in file names replaced by "_"."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{benchmark}__{task}")


@dataclass
class BuildResult:
    out_dir: Path
    splits: BenchSplits
    stats: TokenizeStats
    summary: dict


def render_spec(cfg: BenchConfig) -> RenderSpec:
    r = cfg.render
    return RenderSpec(
        seed=cfg.seed,
        delimiters=tuple(r.delimiters),
        shots=ShotPolicy(k=r.shots, zipf_a=r.zipf_a, max_k=r.max_shots),
        demo_separator=r.demo_separator,
        max_seq_length=r.max_seq_length,
    )


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

    task_map = load_task_map(cfg.task_map)
    tasks, train_only = read_sources(cfg.sources, task_map)
    log.info("read %d tasks, %d instances", len(tasks), sum(len(t.instances) for t in tasks))
    splits = split_tasks(tasks, cfg.splits, train_only=train_only)
    splits.splits[TRAIN], leaks = enforce_leak_policy(
        splits[TRAIN], splits.evals(), cfg.leak.policy
    )
    pairs = [
        p
        for p in task_pair_overlap(
            splits[TRAIN],
            {s: splits[s] for s in EVAL_SPLITS},
            n=cfg.leak.ngram,
            threshold=cfg.leak.pair_threshold,
        )
        if p.eval_task != p.train_task  # held-out instances of a task overlap their own task
    ]
    for p in pairs[:20]:
        log.warning(
            "%d-gram overlap %.1f%%: eval %s/%s <- train %s",
            cfg.leak.ngram,
            100 * p.fraction,
            p.eval_split,
            p.eval_task,
            p.train_task,
        )

    # Text of the evaluation splits (and validation) for evaluation code.
    text_splits = (VALIDATION, *EVAL_SPLITS) + ((TRAIN,) if cfg.write_train_text else ())
    for split in text_splits:
        write_tasks_jsonl(splits[split], stage / "bench" / f"{split}.jsonl")
    reports = stage / "reports"
    reports.mkdir()
    _write_json(reports / "leaks.json", [dataclasses.asdict(lk) for lk in leaks])
    _write_json(reports / "task_pair_overlap.json", [dataclasses.asdict(p) for p in pairs])
    _write_json(
        stage / "splits.json",
        {s: [t.name for t in splits[s]] for s in splits.splits},
    )

    # Tokenize train and validation into indexed datasets.
    train_by_name = {t.name: t for t in splits[TRAIN]}
    jobs = []
    for split in TOKENIZED_SPLITS:
        for t in splits[split]:
            prefix = stage / "indexed" / split / dataset_name(t.benchmark, t.name)
            pool = train_by_name[t.name].instances if t.name in train_by_name else ()
            jobs.append(Job(split=split, task=t, prefix=prefix, pool=pool))
    stats = write_indexed_datasets(
        jobs,
        render_spec(cfg),
        workers=cfg.tokenize.workers,
        chunk_size=cfg.tokenize.chunk_size,
        progress=progress,
    )

    # Blend.
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
        stage, per_split, eps_cap=cfg.blend.eps_cap, benchmark_shares=cfg.blend.benchmark_shares
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
    (stage / MARKER).write_text("", encoding="utf-8")

    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    log.info(
        "wrote %s: %d examples, %d tokens in %.1f s (%.0f tok/s)",
        out,
        stats.examples,
        stats.tokens,
        stats.seconds,
        stats.tokens / max(stats.seconds, 1e-9),
    )
    log.info("\n%s", md)
    return BuildResult(out_dir=out, splits=splits, stats=stats, summary=summary)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
