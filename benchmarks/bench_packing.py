"""Packing efficiency (non-pad fraction) and speed at 2048 tokens on OPT-IML-like lengths.

Three synthetic length distributions (prompt + target + </s>, clipped at the sequence length):

- ``lognormal``: prompts lognormal with mean 261 and std 631 before clipping (the OPT-IML
  statistics), targets short (lognormal, median 8);
- ``moments``: a short body plus ~11% near-full examples, so that the clipped prompts have
  mean ~261 and std ~631 (the hardest reading of those statistics);
- ``tasks``: 500 tasks, each with its own narrow length distribution (task medians spread
  lognormally), mixed by examples: shows why packing after blending beats packing per task.

Also an end-to-end run: indexed datasets on disk -> ``build_packed_datasets`` -> samples ->
``collate_packed``. CPU timings are indicative only: other jobs share these cores.

    .venv/bin/python benchmarks/bench_packing.py [--num-examples 200000] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from megatron_optiml.data import (
    PackedInstructionDatasetConfig,
    build_packed_datasets,
    collate_packed,
    pack_examples,
    pack_fill,
    write_examples,
)


def _lognormal(rng, mean, std, n):
    s2 = np.log1p((std / mean) ** 2)
    return rng.lognormal(np.log(mean) - s2 / 2, np.sqrt(s2), n)


def lengths_lognormal(n, s, rng):
    prompt = _lognormal(rng, 261, 631, n).astype(np.int64)
    target = rng.lognormal(np.log(8), 1.0, n).astype(np.int64) + 1
    return np.minimum(prompt + target, s), None


def lengths_moments(n, s, rng):
    long = rng.random(n) < 0.11
    prompt = np.where(
        long, rng.integers(int(0.85 * s), s, n), rng.lognormal(np.log(30), 1.0, n).astype(np.int64)
    )
    target = rng.lognormal(np.log(8), 1.0, n).astype(np.int64) + 1
    return np.minimum(prompt + target, s), prompt


def lengths_tasks(n, s, rng, num_tasks=500):
    medians = np.clip(rng.lognormal(np.log(150), 1.1, num_tasks), 8, s)
    task = rng.integers(0, num_tasks, n)
    prompt = rng.lognormal(np.log(medians[task]), 0.3).astype(np.int64)
    target = rng.lognormal(np.log(8), 1.0, n).astype(np.int64) + 1
    return np.minimum(prompt + target, s), task


def per_task_fill(lengths, task, s):
    """Fill when each task is packed on its own (BFD over the whole task)."""
    used = packs = 0
    for t in np.unique(task):
        lt = lengths[task == t]
        offsets, members = pack_examples(lt, s, window=lt.size)
        used += int(lt.sum())
        packs += offsets.size - 1
    return used / (packs * s)


def bench_plans(n, s, seed):
    rows = []
    for name, fn in (
        ("lognormal", lengths_lognormal),
        ("moments", lengths_moments),
        ("tasks", lengths_tasks),
    ):
        rng = np.random.default_rng(seed)
        lengths, extra = fn(n, s, rng)
        info = {"distribution": name, "mean_len": float(lengths.mean())}
        if name == "moments":
            info.update(prompt_mean=float(extra.mean()), prompt_std=float(extra.std()))
        for algorithm, window in (
            ("greedy", 0),
            ("best_fit_decreasing", 1024),
            ("best_fit_decreasing", 8192),
        ):
            t0 = time.perf_counter()
            offsets, members = pack_examples(lengths, s, algorithm=algorithm, window=max(window, 1))
            dt = time.perf_counter() - t0
            rows.append(
                {
                    **info,
                    "algorithm": algorithm,
                    "window": window or None,
                    "fill": round(pack_fill(lengths, offsets, members, s), 5),
                    "examples_per_s": round(n / dt),
                    "examples_per_pack": round(n / (offsets.size - 1), 2),
                }
            )
        if name == "tasks":
            rows.append(
                {
                    **info,
                    "algorithm": "best_fit_decreasing per task",
                    "window": None,
                    "fill": round(per_task_fill(lengths, extra, s), 5),
                }
            )
    return rows


def bench_end_to_end(s, seed, num_tasks=20, per_task=2000, num_packs=2000):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="bench_packing_") as tmp:
        prefixes = []
        for t in range(num_tasks):
            lengths, _ = lengths_lognormal(per_task, s, rng)
            examples = []
            for total in lengths.tolist():
                target = min(total - 1, int(rng.integers(1, 16)))
                ids = rng.integers(3, 50000, total - 1).tolist()
                examples.append((ids[: total - 1 - target], ids[total - 1 - target :] + [2]))
            prefix = str(Path(tmp) / f"task{t:03d}")
            write_examples(prefix, examples)
            prefixes.append(prefix)
        weights = list(rng.dirichlet(np.ones(num_tasks)))
        config = PackedInstructionDatasetConfig(
            random_seed=seed, sequence_length=s, blend_per_split=[(prefixes, weights), None, None]
        )
        t0 = time.perf_counter()
        train, _, _ = build_packed_datasets(config, [num_packs, None, None])
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reads = min(len(train), 400)
        batches = [train[p] for p in range(reads)]
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, reads, 8):
            collate_packed(batches[i : i + 8], attention="thd")
        thd_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, 64, 8):
            collate_packed(batches[i : i + 8], attention="local")
        local_s = time.perf_counter() - t0
        return {
            "packs": len(train),
            "fill": round(train.num_tokens() / (len(train) * s), 5),
            "build_s": round(build_s, 2),
            "packs_per_s_getitem": round(reads / read_s),
            "packs_per_s_collate_thd": round(reads / thd_s),
            "packs_per_s_collate_local_mask": round(64 / local_s),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-examples", type=int, default=200_000)
    parser.add_argument("--sequence-length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    for row in bench_plans(args.num_examples, args.sequence_length, args.seed):
        print(json.dumps(row))
    if not args.skip_e2e:
        print(json.dumps({"end_to_end": bench_end_to_end(args.sequence_length, args.seed)}))


if __name__ == "__main__":
    main()
