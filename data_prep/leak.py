"""Train/eval leakage: exact duplicates of normalized inputs, and the paper's 13-gram task-pair check.

Paper §2.3: for every (train task, eval task) pair, the fraction of the eval task's examples
that share any 13-gram with the train task's instantiated sequences; pairs above 1% were
examined by hand. We compute the same fractions over words of the normalized text
(input + first output) and report the pairs above the threshold.

Both checks work on compact hashes, so the pipeline computes them in worker processes and only
moves bytes and integer arrays: a 16-byte digest per input (`input_digests`), and per instance
the 64-bit hashes of its word n-grams (`ngram_hashes`). The evaluation side's n-grams form one
sorted `NgramIndex`; each training task is looked up in it with a binary search.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from data_prep.errors import DataError
from data_prep.schema import Instance, Task

log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+", re.UNICODE)
DIGEST_SIZE = 16
# Odd multiplier of the polynomial n-gram hash over 64-bit word hashes (FNV's 64-bit prime).
_NGRAM_BASE = np.uint64(0x100000001B3)

Digest = Callable[[Instance], bytes]
"""The normalized-input digest of an instance (precomputed ones come from `digest_lookup`)."""


def normalize_text(text: str) -> str:
    """Lower case words joined by single spaces: punctuation, case and spacing do not count."""
    return " ".join(_WORD.findall(text.lower()))


def input_hash(text: str) -> str:
    """A stable 128-bit hash of the normalized text (hex)."""
    return input_digest(text).hex()


def input_digest(text: str) -> bytes:
    """`input_hash` as 16 raw bytes (sorts like the hex string)."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=DIGEST_SIZE).digest()


def digest_input(inst: Instance) -> bytes:
    """The default `Digest`: computed on the spot."""
    return input_digest(inst.input)


def input_digests(instances: Iterable[Instance]) -> bytes:
    """The digests of `instances`' inputs, concatenated (16 bytes each)."""
    return b"".join(input_digest(inst.input) for inst in instances)


def digest_lookup(tasks: Sequence[Task], blobs: Sequence[bytes]) -> Digest:
    """A `Digest` over precomputed `input_digests(task.instances)` of `tasks`.

    Instances are looked up by identity, so tasks derived with `Task.with_instances` (which keep
    the same `Instance` objects) find their digests too.
    """
    table: dict[int, bytes] = {}
    for task, blob in zip(tasks, blobs, strict=True):
        if len(blob) != DIGEST_SIZE * len(task.instances):
            raise ValueError(
                f"task {task.name!r}: {len(blob)} digest bytes for {len(task.instances)} instances"
            )
        for k, inst in enumerate(task.instances):
            table[id(inst)] = blob[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE]

    def digest(inst: Instance) -> bytes:
        try:
            return table[id(inst)]
        except KeyError:
            return input_digest(inst.input)

    return digest


@dataclass(frozen=True)
class Leak:
    """An evaluation instance whose normalized input also occurs in training."""

    split: str
    task: str
    instance_id: str
    train_tasks: tuple[str, ...]


def _eval_digests(evals: dict[str, list[Task]], digest: Digest) -> set[bytes]:
    return {digest(inst) for tasks in evals.values() for t in tasks for inst in t.instances}


def find_exact_leaks(
    train: Iterable[Task], evals: dict[str, list[Task]], *, digest: Digest = digest_input
) -> list[Leak]:
    """Eval instances (by split) whose normalized input is also a training input."""
    eval_digests = _eval_digests(evals, digest)
    if not eval_digests:
        return []
    owners: dict[bytes, set[str]] = {}
    for task in train:
        for inst in task.instances:
            d = digest(inst)
            if d in eval_digests:
                owners.setdefault(d, set()).add(task.name)
    leaks = []
    if not owners:
        return leaks
    for split, tasks in evals.items():
        for task in tasks:
            for inst in task.instances:
                names = owners.get(digest(inst))
                if names:
                    leaks.append(Leak(split, task.name, inst.id, tuple(sorted(names))))
    return leaks


def enforce_leak_policy(
    train: list[Task],
    evals: dict[str, list[Task]],
    policy: str,
    *,
    digest: Digest = digest_input,
) -> tuple[list[Task], list[Leak]]:
    """Apply `policy` (error | report | drop) to exact leaks; returns (train tasks, leaks)."""
    leaks = find_exact_leaks(train, evals, digest=digest)
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
        eval_digests = _eval_digests(evals, digest)
        new_train = []
        for task in train:
            kept = [i for i in task.instances if digest(i) not in eval_digests]
            if len(kept) != len(task.instances):
                log.warning(
                    "dropped %d leaked instance(s) from train task %s",
                    len(task.instances) - len(kept),
                    task.name,
                )
            if kept:
                new_train.append(task.with_instances(kept))
        if not new_train:
            raise DataError(
                "leak.policy='drop' removed every training instance (each one is also in an "
                "evaluation split); nothing is left to train on"
            )
        train = new_train
    return train, leaks


# --- 13-gram task-pair overlap --------------------------------------------------------------


def _instance_words(inst: Instance) -> list[str]:
    text = inst.input + " " + (inst.outputs[0] if inst.outputs else "")
    return _WORD.findall(text.lower())


def ngram_hashes(instances: Sequence[Instance], n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of each instance (input + first output, normalized).

    Returns (hashes uint64, owners int64): `owners[k]` is the position in `instances` of the
    instance n-gram `k` comes from. An n-gram's hash is a polynomial over its words' `hash()`,
    so it is only comparable within one process tree (forked workers share the salt); only
    counts come out of it, so the salt can change nothing but (vanishingly rare) collisions.
    """
    words: list[str] = []
    sizes = np.zeros(len(instances), dtype=np.int64)
    for k, inst in enumerate(instances):
        w = _instance_words(inst)
        words += w
        sizes[k] = len(w)
    windows = len(words) - n + 1
    if windows <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    h = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    grams = h[:windows].copy()
    for j in range(1, n):
        grams *= _NGRAM_BASE
        grams += h[j : j + windows]
    owner_of_word = np.repeat(np.arange(len(instances), dtype=np.int64), sizes)
    inside = owner_of_word[:windows] == owner_of_word[n - 1 :]  # the window stays in one instance
    return grams[inside], owner_of_word[:windows][inside]


@dataclass(frozen=True)
class EvalEntry:
    """One task of one evaluation split in an `NgramIndex`."""

    split: str
    task: str
    instances: int


@dataclass
class NgramIndex:
    """The evaluation side's n-gram hashes, sorted, each with its instance's global number."""

    hashes: np.ndarray  # uint64, sorted
    owners: np.ndarray  # int64: global eval instance number of each hash
    entry_of: np.ndarray  # int64: entry (position in `entries`) of each global instance number
    entries: list[EvalEntry]

    @classmethod
    def build(cls, parts: Sequence[tuple[EvalEntry, np.ndarray, np.ndarray]]) -> NgramIndex:
        """From (entry, hashes, owners within the entry) per evaluation task, as `ngram_hashes`."""
        entries = [e for e, _, _ in parts]
        sizes = np.array([e.instances for e in entries], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        if parts:
            hashes = np.concatenate([h for _, h, _ in parts])
            owners = np.concatenate([o + first[k] for k, (_, _, o) in enumerate(parts)])
        else:
            hashes, owners = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        order = np.argsort(hashes, kind="stable")
        entry_of = np.repeat(np.arange(len(entries), dtype=np.int64), sizes)
        return cls(hashes[order], owners[order], entry_of, entries)

    def __len__(self) -> int:
        return len(self.hashes)

    def hit_instances(self, hashes: np.ndarray) -> np.ndarray:
        """Global numbers of the evaluation instances sharing any of `hashes` (sorted, unique)."""
        if not len(self.hashes) or not len(hashes):
            return np.zeros(0, np.int64)
        q = np.unique(hashes)
        lo = np.searchsorted(self.hashes, q, side="left")
        hi = np.searchsorted(self.hashes, q, side="right")
        found = hi > lo
        lo, counts = lo[found], (hi - lo)[found]
        if not len(lo):
            return np.zeros(0, np.int64)
        starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        return np.unique(self.owners[starts + np.arange(int(counts.sum()))])

    def pairs(self, train_task: str, hits: np.ndarray, threshold: float) -> list[PairOverlap]:
        """The entries whose fraction of instances in `hits` is above `threshold`."""
        counts = np.bincount(self.entry_of[hits], minlength=len(self.entries))
        out = []
        for k in np.flatnonzero(counts):
            e, count = self.entries[k], int(counts[k])
            frac = count / e.instances
            if frac > threshold:
                out.append(PairOverlap(e.split, e.task, train_task, frac, count))
        return out


@dataclass(frozen=True)
class PairOverlap:
    """Fraction of an eval task's examples with any n-gram shared with a train task."""

    eval_split: str
    eval_task: str
    train_task: str
    fraction: float
    examples: int


def sort_pairs(pairs: list[PairOverlap]) -> list[PairOverlap]:
    """Largest fraction first, then by names (the report's order)."""
    return sorted(pairs, key=lambda p: (-p.fraction, p.eval_split, p.eval_task, p.train_task))


def eval_index(evals: dict[str, list[Task]], n: int) -> NgramIndex:
    """The `NgramIndex` of every task of every evaluation split (in one process)."""
    parts = []
    for split, tasks in evals.items():
        for task in tasks:
            h, o = ngram_hashes(task.instances, n)
            parts.append((EvalEntry(split, task.name, len(task.instances)), h, o))
    return NgramIndex.build(parts)


def task_pair_overlap(
    train: Iterable[Task], evals: dict[str, list[Task]], *, n: int = 13, threshold: float = 0.01
) -> list[PairOverlap]:
    """(train task, eval task) pairs whose overlap fraction is above `threshold`, largest first.

    The index is built over the evaluation side (usually far smaller than training); each
    training task is then looked up in it once. (The pipeline does the same in its workers.)
    """
    index = eval_index(evals, n)
    pairs: list[PairOverlap] = []
    if not len(index):
        return pairs
    for task in train:
        hashes, _ = ngram_hashes(task.instances, n)
        pairs += index.pairs(task.name, index.hit_instances(hashes), threshold)
    return sort_pairs(pairs)
