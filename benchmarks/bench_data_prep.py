"""Tokens/s of the data-prep pipeline on 1 and 2 worker processes vs a plain single-process loop.

All runs use the same input: the three collections in ../shared/data (or --data), every task's
instances as one training split (PromptSource with every template application kept,
`template_sampling: all`, so the input stays 17,505 examples). Rows:

- plain loop: for each example, `render_sampled` (the pipeline's per-example seed) + HF
  `tokenizers` encode + left truncation + `IndexedDatasetBuilder.add_document`, in one process;
  it writes the same bytes as the pipeline (checked). Reading is not timed;
- plain loop incl. reading: the same plus `read_sources` (what the full pipeline also pays);
- tokenize stage, N workers: `data_prep.tokenize.write_indexed_datasets` (render with sampled
  delimiters + tokenize in N processes, write in the main process);
- full pipeline, N workers: `build_bench` end to end (read, split, leak checks, text splits,
  tokenize, blend); its per-stage seconds are printed below the table. Nothing is held out
  (so no digests, eval text or 13-gram check), unless --held-out: 5% validation, 10% held-out
  instances, 3 held-out tasks (then only train + validation are tokenized: fewer tokens).

With --repeat R every row runs R times, interleaved (row 1, row 2, ..., row 1, ...), and the
fastest run counts: on a shared machine the minimum is the least disturbed.

    .venv/bin/python benchmarks/bench_data_prep.py [--data DIR] [--max-examples N] [--repeat R]
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from data_prep.config import config_from_dict
from data_prep.mapping import TaskMap
from data_prep.pipeline import build_bench, render_spec
from data_prep.readers import read_sources
from data_prep.render import render_sampled
from data_prep.tokenize import (
    DTYPE,
    EOS_ID,
    Job,
    prep_tokenizer,
    truncate_left,
    write_indexed_datasets,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# T0 training datasets of shared/data/promptsource_t0 (file names are <dataset>_<template>).
T0_DATASETS = """adversarial_qa_dbert adversarial_qa_dbidaf adversarial_qa_droberta ag_news
amazon_polarity app_reviews cnn_dailymail_3_0_0 common_gen commonsense_qa cosmos_qa dream
duorc_ParaphraseRC duorc_SelfRC gigaword glue_mrpc glue_qqp kilt_tasks_hotpotqa multi_news
paws_labeled_final qasc quarel quoref ropes samsum sciq social_i_qa trec wiki_bio
wiki_hop_original wiqa xsum yelp_review_full""".split()


HELD_OUT = {  # --held-out: the split and leak stages get work (the default holds nothing out)
    "heldout_tasks": ["samsum", "xsum", "known_unknowns"],
    "heldout_instance_fraction": 0.1,
    "validation_fraction": 0.05,
    "max_eval_instances": 250,
}


def make_config(data: Path, workers: int, held_out: bool = False):
    splits = (
        HELD_OUT if held_out else {"heldout_instance_fraction": 0.0, "validation_fraction": 0.0}
    )
    return config_from_dict(
        {
            "sources": [
                {"type": "niv2", "path": str(data / "natural_instructions"), "benchmark": "niv2"},
                {
                    "type": "promptsource",
                    "path": str(data / "promptsource_t0"),
                    "benchmark": "promptsource",
                    "datasets": T0_DATASETS,
                    "category": "t0",
                    "skip_empty_outputs": True,
                    "template_sampling": "all",
                },
                {
                    "type": "bigbench",
                    "path": str(data / "bigbench"),
                    "benchmark": "bigbench",
                    "category": "other",
                    "skip_empty_outputs": True,
                },
            ],
            "splits": splits,
            "leak": {"policy": "report"},
            "tokenize": {"workers": workers},
        }
    )


def plain_loop(tasks, out: Path, spec) -> tuple[int, float]:
    """The reference: same rendering, tokenizer and builder, one process, no chunks or IPC.

    It renders each example with the pipeline's per-example seed and left-truncates the same
    way, so its files must equal the pipeline's byte for byte (checked in `main`).
    """
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron_optiml.tokenizer import load_opt_tokenizer

    tok = load_opt_tokenizer()
    tokens = 0
    t0 = time.perf_counter()
    for task in tasks:
        prefix = out / task.name
        builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=DTYPE)
        for i, inst in enumerate(task.instances):
            rng = random.Random(f"{spec.seed}:train:{task.name}:{i}")
            ex = render_sampled(task, inst, rng, delimiters=spec.delimiters)
            p = tok.encode(ex.prompt).ids if ex.prompt else []
            t = tok.encode(ex.target).ids + [EOS_ID]
            p, t, _ = truncate_left(p, t, spec.max_seq_length)
            builder.add_document(p + t, [len(p), len(t)])
            tokens += len(p) + len(t)
        builder.finalize(str(prefix) + ".idx")
    return tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--data", type=Path, default=SHARED if SHARED.exists() else REPO / "examples/data"
    )
    ap.add_argument("--max-examples", type=int, default=None, help="cap per task (shorter runs)")
    ap.add_argument("--skip-full", action="store_true", help="only the loop and the tokenize stage")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row (fastest counts)")
    ap.add_argument(
        "--held-out",
        action="store_true",
        help="full pipeline with validation/held-out splits (digests, eval text, 13-gram check)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    cfg = make_config(args.data, 1)

    def read():
        tasks, _ = read_sources(cfg.sources, TaskMap())
        if args.max_examples:
            tasks = [t.with_instances(t.instances[: args.max_examples]) for t in tasks]
        return tasks

    tasks = read()
    n_ex = sum(len(t.instances) for t in tasks)
    print(f"input: {args.data} — {len(tasks)} tasks, {n_ex:,} examples")
    spec = render_spec(cfg)
    best: dict[str, tuple[int, float]] = {}
    stages: dict[int, dict[str, float]] = {}

    def record(name: str, tokens: int, secs: float) -> None:
        if name not in best or secs < best[name][1]:
            best[name] = (tokens, secs)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep in range(args.repeat):
            loop_dir = tmp / f"loop{rep}"
            loop_dir.mkdir()
            tokens, secs = plain_loop(tasks, loop_dir, spec)
            record("plain loop (1 process)", tokens, secs)
            t0 = time.perf_counter()
            read_dir = tmp / f"loop_read{rep}"
            read_dir.mkdir()
            tokens, _ = plain_loop(read(), read_dir, spec)
            record("plain loop incl. reading", tokens, time.perf_counter() - t0)
            for workers in (1, 2):
                out = tmp / f"w{workers}_{rep}"
                jobs = [Job(split="train", task=t, prefix=out / t.name) for t in tasks]
                prep_tokenizer.cache_clear()  # every run starts cold, as the plain loop does
                st = write_indexed_datasets(jobs, spec, workers=workers, progress=False)
                record(f"tokenize stage, {workers} worker(s)", st.tokens, st.seconds)
                if rep == 0:
                    same = all(
                        (loop_dir / f"{t.name}{ext}").read_bytes()
                        == (out / f"{t.name}{ext}").read_bytes()
                        for t in tasks
                        for ext in (".bin", ".idx")
                    )
                    print(f"{workers} worker(s): files byte-identical to the plain loop: {same}")
            if not args.skip_full and not args.max_examples:
                for workers in (1, 2):
                    name = f"full pipeline, {workers} worker(s)"
                    prep_tokenizer.cache_clear()
                    t0 = time.perf_counter()
                    res = build_bench(
                        make_config(args.data, workers, args.held_out),
                        tmp / f"full{workers}",
                        progress=False,
                    )
                    secs = time.perf_counter() - t0
                    if name not in best or secs < best[name][1]:
                        stages[workers] = res.timings
                    record(name, res.stats.tokens, secs)
            shutil.rmtree(loop_dir)
            shutil.rmtree(read_dir)
    base = best["plain loop (1 process)"]
    base_tps = base[0] / base[1]
    print("\n| run | tokens | seconds | tokens/s | vs plain loop |\n|---|---:|---:|---:|---:|")
    for name, (tokens, secs) in best.items():
        print(
            f"| {name} | {tokens:,} | {secs:.2f} | {tokens / secs:,.0f} | {tokens / secs / base_tps:.2f}x |"
        )
    for workers, timings in stages.items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
        print(f"full pipeline, {workers} worker(s), seconds per stage: {parts}")


if __name__ == "__main__":
    main()
