"""Render + tokenize examples in worker processes and write Megatron-Core indexed datasets.

On-disk representation (docs/architecture.md, decided once): one `IndexedDataset` (uint16) per
task and split; **each example is one document of two sequences**: the prompt tokens (may be
empty), then the target tokens followed by `</s>` (id 2, never empty). No BOS. Over-long
examples are truncated from the left (prompt first) so the target and `</s>` survive.

Determinism: each example's delimiter and demonstrations come from its own
`random.Random(f"{seed}:{split}:{task}:{index}")`, so output bytes do not depend on how work is
split among workers; results are consumed in submission order.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.render import ShotPolicy, render_sampled
from data_prep.schema import Task

log = logging.getLogger(__name__)

EOS_ID = 2
DTYPE = np.uint16


@dataclass(frozen=True, kw_only=True)
class RenderSpec:
    """What a worker needs to render examples (picklable, small)."""

    seed: int
    delimiters: tuple[str, ...]
    shots: ShotPolicy
    demo_separator: str
    max_seq_length: int


@dataclass
class ChunkResult:
    """Tokens of a run of consecutive examples of one task: prompts and targets interleaved."""

    tokens: np.ndarray  # uint16, all sequences concatenated
    lengths: np.ndarray  # int32, 2 per example (prompt, target+eos)
    truncated: int = 0  # examples whose prompt was cut
    target_truncated: int = 0  # examples whose target itself had to be cut


def truncate_left(
    prompt: list[int], target: list[int], max_len: int
) -> tuple[list[int], list[int], int]:
    """Drop tokens from the left so len(prompt) + len(target) <= max_len (target ends in </s>).

    Returns (prompt, target, level): level 0 = untouched, 1 = prompt cut, 2 = target cut too.
    """
    excess = len(prompt) + len(target) - max_len
    if excess <= 0:
        return prompt, target, 0
    if excess <= len(prompt):
        return prompt[excess:], target, 1
    return [], target[len(target) - max_len :], 2


def encode_examples(tokenizer, pairs: Sequence[tuple[str, str]], max_len: int) -> ChunkResult:
    """Tokenize (prompt, target) pairs into one `ChunkResult` (target gets `</s>`)."""
    flat: list[int] = []
    lengths: list[int] = []
    trunc = ttrunc = 0
    encode = tokenizer.encode
    for prompt, target in pairs:
        p = encode(prompt).ids if prompt else []
        t = encode(target).ids + [EOS_ID]
        p, t, level = truncate_left(p, t, max_len)
        trunc += level >= 1
        ttrunc += level == 2
        flat += p
        flat += t
        lengths.append(len(p))
        lengths.append(len(t))
    return ChunkResult(
        np.asarray(flat, dtype=DTYPE), np.asarray(lengths, dtype=np.int32), trunc, ttrunc
    )


# --- worker side -------------------------------------------------------------------------
# Workers are forked after `_STATE` is set, so the (large) task lists are inherited, not sent.
_STATE: dict = {}


def _render_range(split: str, task: Task, pool: Sequence, start: int, end: int, spec: RenderSpec):
    pairs = []
    for i in range(start, end):
        rng = random.Random(f"{spec.seed}:{split}:{task.name}:{i}")
        ex = render_sampled(
            task,
            task.instances[i],
            rng,
            pool=pool,
            shots=spec.shots,
            delimiters=spec.delimiters,
            demo_separator=spec.demo_separator,
        )
        pairs.append((ex.prompt, ex.target))
    return pairs


def _work(item: tuple[int, int, int]) -> ChunkResult:
    job_index, start, end = item
    from megatron_optiml.tokenizer import cached_opt_tokenizer

    job = _STATE["jobs"][job_index]
    spec = _STATE["spec"]
    pairs = _render_range(job.split, job.task, job.pool, start, end, spec)
    return encode_examples(cached_opt_tokenizer(), pairs, spec.max_seq_length)


@dataclass
class Job:
    """One output dataset: a task of a split, and the demonstration pool for k-shot."""

    split: str
    task: Task
    prefix: Path  # output path prefix (without .bin/.idx)
    pool: Sequence = ()


@dataclass
class JobStats:
    examples: int = 0
    prompt_tokens: int = 0
    target_tokens: int = 0
    truncated: int = 0
    target_truncated: int = 0


@dataclass
class TokenizeStats:
    per_job: list[JobStats] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(j.prompt_tokens + j.target_tokens for j in self.per_job)

    @property
    def examples(self) -> int:
        return sum(j.examples for j in self.per_job)


def _items(jobs: Sequence[Job], chunk: int) -> Iterator[tuple[int, int, int]]:
    for j, job in enumerate(jobs):
        n = len(job.task.instances)
        for start in range(0, n, chunk):
            yield j, start, min(n, start + chunk)


def write_indexed_datasets(
    jobs: Sequence[Job],
    spec: RenderSpec,
    *,
    workers: int = 1,
    chunk_size: int = 256,
    progress: bool = True,
) -> TokenizeStats:
    """Render, tokenize and write one indexed dataset per job (temp names, renamed at the end)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    total_examples = sum(len(j.task.instances) for j in jobs)
    stats = TokenizeStats(per_job=[JobStats() for _ in jobs])
    _STATE.update(jobs=list(jobs), spec=spec)
    t0 = time.perf_counter()
    bar = _progress_bar(total_examples, progress)
    pool = None
    try:
        if workers > 1:
            pool = mp.get_context("fork").Pool(workers)
            results = pool.imap(_work, _items(jobs, chunk_size), chunksize=1)
        else:
            results = map(_work, _items(jobs, chunk_size))
        current, builder, tmp_bin = -1, None, None
        for (j, start, end), res in zip(_items(jobs, chunk_size), results):
            if j != current:
                if builder is not None:
                    _finish(builder, tmp_bin, jobs[current].prefix)
                current = j
                jobs[j].prefix.parent.mkdir(parents=True, exist_ok=True)
                tmp_bin = Path(str(jobs[j].prefix) + ".bin.tmp")
                builder = IndexedDatasetBuilder(str(tmp_bin), dtype=DTYPE)
            offset = 0
            lengths = res.lengths.tolist()
            for k in range(0, len(lengths), 2):
                n = lengths[k] + lengths[k + 1]
                builder.add_document(res.tokens[offset : offset + n], lengths[k : k + 2])
                offset += n
            st = stats.per_job[j]
            st.examples += end - start
            st.prompt_tokens += int(sum(lengths[0::2]))
            st.target_tokens += int(sum(lengths[1::2]))
            st.truncated += res.truncated
            st.target_truncated += res.target_truncated
            if bar is not None:
                bar.update(end - start)
                el = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(
                    f"{stats.examples / el:,.0f} ex/s, {stats.tokens / el:,.0f} tok/s"
                )
        if builder is not None:
            _finish(builder, tmp_bin, jobs[current].prefix)
        # Empty jobs still get (empty) files so every prefix exists.
        for job, st in zip(jobs, stats.per_job):
            if st.examples == 0 and not Path(str(job.prefix) + ".idx").exists():
                job.prefix.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(str(job.prefix) + ".bin.tmp")
                _finish(IndexedDatasetBuilder(str(tmp), dtype=DTYPE), tmp, job.prefix)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
        _STATE.clear()
    stats.seconds = time.perf_counter() - t0
    return stats


def _finish(builder, tmp_bin: Path, prefix: Path) -> None:
    tmp_idx = Path(str(prefix) + ".idx.tmp")
    builder.finalize(str(tmp_idx))
    os.replace(tmp_bin, str(prefix) + ".bin")
    os.replace(tmp_idx, str(prefix) + ".idx")


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ex", desc="tokenize", mininterval=0.5, dynamic_ncols=True)
