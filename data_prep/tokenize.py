"""Render + tokenize examples in worker processes and write Megatron-Core indexed datasets.

On-disk representation (docs/architecture.md, decided once): one `IndexedDataset` (uint16) per
task and split; **each example is one document of two sequences**: the prompt tokens (may be
empty), then the target tokens followed by `</s>` (id 2, never empty). No BOS. Over-long
examples are truncated from the left (prompt first) so the target and `</s>` survive.

Workers render and tokenize chunks of consecutive examples (`data_prep.word_cache`: GPT-2 words
split in Python, each distinct word's ids from the HF tokenizer once, then joined as uint16
bytes; the same ids); ids stay bytes / numpy arrays up to the main process, which appends each
chunk's tokens to its dataset with `data_prep.indexed.IndexedWriter` (Megatron-Core's
`IndexedDatasetBuilder`, one document per example, temp names until the dataset is complete).

Determinism: each example's delimiter and demonstrations come from its own
`random.Random(f"{seed}:{split}:{task}:{index}")`, so output bytes do not depend on how work is
split among workers; results are consumed in submission order.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.indexed import IndexedWriter
from data_prep.render import ShotPolicy, render_sampled
from data_prep.schema import Task
from data_prep.word_cache import WordCacheEncoder
from data_prep.workers import Shared, WorkerPool, progress_bar

log = logging.getLogger(__name__)

EOS_ID = 2
DTYPE = np.uint16
_PARALLELISM_ENV = "TOKENIZERS_PARALLELISM"


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


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """HF tokenizers' batch encoding without its thread pool (workers get one core each)."""
    old = os.environ.get(_PARALLELISM_ENV)
    if old == "false":
        yield
        return
    os.environ[_PARALLELISM_ENV] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_PARALLELISM_ENV, None)
        else:
            os.environ[_PARALLELISM_ENV] = old


@functools.cache
def prep_tokenizer() -> WordCacheEncoder:
    """The data-prep tokenizer, one per process: OPT's behind a word cache (same ids)."""
    from megatron_optiml.tokenizer import load_opt_tokenizer

    return WordCacheEncoder(load_opt_tokenizer())


_EOS_BYTES = np.array([EOS_ID], dtype=DTYPE).tobytes()


def encode_examples(tokenizer, pairs: Sequence[tuple[str, str]], max_len: int) -> ChunkResult:
    """Tokenize (prompt, target) pairs into one `ChunkResult` (target gets `</s>`).

    `tokenizer`: a `WordCacheEncoder` (`prep_tokenizer()`), or a `tokenizers.Tokenizer`.
    Ids stay uint16 (bytes, then numpy views) from the encoder to the result: no Python int per
    token. Truncation is `truncate_left`, on the numpy views.
    """
    encoder = tokenizer if isinstance(tokenizer, WordCacheEncoder) else WordCacheEncoder(tokenizer)
    with _one_thread():  # one call: the chunk's new words go to the tokenizer together
        ids = encoder.encode([p for p, _ in pairs] + [t for _, t in pairs])
    prompts, targets = ids[: len(pairs)], ids[len(pairs) :]
    parts: list[np.ndarray] = []
    lengths: list[int] = []
    trunc = ttrunc = 0
    for p, t in zip(prompts, targets):
        p, t, level = truncate_left(
            np.frombuffer(p, dtype=DTYPE), np.frombuffer(t + _EOS_BYTES, dtype=DTYPE), max_len
        )
        trunc += level >= 1
        ttrunc += level == 2
        parts += (np.asarray(p, dtype=DTYPE), t)
        lengths += (len(p), len(t))
    return ChunkResult(
        np.concatenate(parts) if parts else np.empty(0, dtype=DTYPE),
        np.asarray(lengths, dtype=np.int32),
        trunc,
        ttrunc,
    )


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


def _tokenize_chunk(item: tuple[Shared, Shared, int, int, int]) -> ChunkResult:
    """Worker: render and tokenize examples [start, end) of job `job_index`."""
    jobs, spec_handle, job_index, start, end = item
    job = jobs.get()[job_index]
    spec = spec_handle.get()
    pairs = _render_range(job.split, job.task, job.pool, start, end, spec)
    return encode_examples(prep_tokenizer(), pairs, spec.max_seq_length)


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
    longest: int = 0  # tokens of the longest example (prompt + target + </s>)


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


def _chunks(jobs: Sequence[Job], chunk: int) -> list[tuple[int, int, int]]:
    out = []
    for j, job in enumerate(jobs):
        n = len(job.task.instances)
        out += [(j, start, min(n, start + chunk)) for start in range(0, n, chunk)]
    return out


def write_indexed_datasets(
    jobs: Sequence[Job],
    spec: RenderSpec,
    *,
    workers: int = 1,
    chunk_size: int = 256,
    progress: bool = True,
    pool: WorkerPool | None = None,
) -> TokenizeStats:
    """Render, tokenize and write one indexed dataset per job (temp names, renamed at the end).

    Without `pool`, a `WorkerPool` of `workers` processes is forked for this call (the jobs are
    inherited); with one, `jobs` and `spec` are shared with its workers (`jobs` should then
    pickle small, as the pipeline's `PlannedJobs` do).
    """
    if pool is None:
        with WorkerPool(workers, jobs=jobs, spec=spec) as own:
            h = own.inherited
            return _write_datasets(own, h["jobs"], h["spec"], jobs, chunk_size, progress)
    return _write_datasets(
        pool, pool.share("jobs", jobs), pool.share("spec", spec), jobs, chunk_size, progress
    )


def _write_datasets(
    pool: WorkerPool,
    jobs_handle: Shared,
    spec_handle: Shared,
    jobs: Sequence[Job],
    chunk_size: int,
    progress: bool,
) -> TokenizeStats:
    chunks = _chunks(jobs, chunk_size)
    stats = TokenizeStats(per_job=[JobStats() for _ in jobs])
    t0 = time.perf_counter()
    bar = progress_bar(sum(e - s for _, s, e in chunks), "tokenize", progress)
    items = ((jobs_handle, spec_handle, j, s, e) for j, s, e in chunks)
    writer: IndexedWriter | None = None
    current = -1
    try:
        for (j, start, end), res in zip(chunks, pool.imap(_tokenize_chunk, items)):
            if j != current:
                if writer is not None:
                    writer.finish()
                writer, current = IndexedWriter(jobs[j].prefix, DTYPE), j
            writer.add(res.tokens, res.lengths)
            st = stats.per_job[j]
            st.examples += end - start
            st.prompt_tokens += int(res.lengths[0::2].sum())
            st.target_tokens += int(res.lengths[1::2].sum())
            st.truncated += res.truncated
            st.target_truncated += res.target_truncated
            if res.lengths.size:
                longest = int((res.lengths[0::2] + res.lengths[1::2]).max())
                st.longest = max(st.longest, longest)
            if bar is not None:
                bar.update(end - start)
                el = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(
                    f"{stats.examples / el:,.0f} ex/s, {stats.tokens / el:,.0f} tok/s"
                )
        if writer is not None:
            writer.finish()
            writer = None
        # Empty jobs still get (empty) files so every prefix exists.
        for job, st in zip(jobs, stats.per_job):
            if st.examples == 0 and not Path(f"{job.prefix}.idx").exists():
                IndexedWriter(job.prefix, DTYPE).finish()
    finally:
        if writer is not None:
            writer.abort()
        if bar is not None:
            bar.close()
    stats.seconds = time.perf_counter() - t0
    return stats
