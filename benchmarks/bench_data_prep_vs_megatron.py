"""Data prep vs Megatron-LM's `tools/preprocess_data.py` (emulated) on one instruction JSONL.

Input: the three collections in ../shared/data (NI, PromptSource/T0 with every template
application kept, BIG-bench; 99 tasks, 17,505 examples), each example rendered `--copies` times
(default 4: 70,020 documents, 14.8M text tokens), zero-shot, each copy with its own delimiter
draw. They are written once as a JSONL of `{"prompt": ..., "target": ...}` lines.

- peer: Megatron-LM `tools/preprocess_data.py --json-keys prompt target --append-eod
  --tokenizer-type GPT2BPETokenizer` with OPT's vocab.json/merges.txt, emulated here (the tool
  is not in the megatron-core wheel). Its structure: a `multiprocessing.Pool(workers)` whose
  initializer builds the tokenizer in every worker (and the main process builds one too),
  `pool.imap(encode, open(jsonl), 32)` over the lines, `json.loads` per line, per key the
  legacy GPT-2 BPE (`LegacyGPT2BPE`, below: OpenAI's encoder.py algorithm, as Megatron's
  `megatron/training/tokenizer/gpt2_tokenization.py` runs it), the eod appended, and in the main
  process `IndexedDatasetBuilder.add_document` into one dataset per key (`<prefix>_prompt_document`,
  `<prefix>_target_document`, uint16), finalized. Timed from opening the input to the pool's
  join. The prompt/target boundary survives as two datasets.
- ours: `data_prep.tokenize.write_indexed_datasets` over the same examples (jobs: copy x task):
  render (same texts as the JSONL) + tokenize in the worker pool, write one Megatron-Core
  indexed dataset per task and copy with each example one document of two sequences (prompt,
  target + `</s>`). Timed from the call (the pool forks inside it) to its return, tokenizer
  loaded cold. Reading the sources is not timed (printed once: it reads 17,505 examples, not
  the 70k-line JSONL).

Checked once per run: the peer's ids (without its eod) equal ours for every prompt and target,
i.e. the legacy Python BPE and ours (HF `tokenizers` behind data_prep's word cache) give the
same ids on the whole input.

Differences from the real tool: with OPT's vocabulary the legacy tokenizer's eod is
`<|endoftext|>` (50260), not OPT's `</s>` (2); the emulation appends 50260 as the tool would.
It finalizes every key's index (the tool's loop, as read, finalizes the last key only): about
0.1 s more for the peer (70k sequence pointers), under 0.5% of its time.
Newer Megatron-LM builds `GPT2BPETokenizer` through `megatron.core.tokenizers` as the HF
tokenizer (`use_fast=False` by default: transformers 4.x's slow `GPT2Tokenizer`, the same
algorithm plus an added-token split per call; transformers 5 has no slow GPT-2 tokenizer, and
it needs the hub's `gpt2` files); the legacy class emulated here is the leaner of the two.

Rows run interleaved (peer 1 worker, ours 1 worker, peer 2 workers, ours 2 workers) `--repeat`
times; the fastest of each counts, and the ours/peer ratios come from those minima. The load
average is printed before and after (other processes on the cores slow both sides).

Measured on the 2-core dev machine, 2026-12-01, other jobs on the cores (load average 0.9
before, 1.7 after), `--repeat 3`, 14,775,744 text tokens:

    workers   peer                        ours                          ours vs peer
    1         42.39 s (348,591 tokens/s)  7.71 s (1,917,490 tokens/s)   5.50x
    2         24.71 s (597,875 tokens/s)  4.51 s (3,272,653 tokens/s)   5.47x

(an earlier run: 6.43x and 5.57x; before data_prep's word cache: 1.57x and 2.23x). More in
docs/data_prep.md, "Against Megatron-LM's preprocess_data.py".

    .venv/bin/python benchmarks/bench_data_prep_vs_megatron.py [--copies 4] [--repeat 3]
        [--max-per-task N]  # e.g. --copies 1 --max-per-task 40 for a quick run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import regex

from data_prep.mapping import TaskMap
from data_prep.pipeline import render_spec
from data_prep.readers import read_sources
from data_prep.render import render_sampled
from data_prep.tokenize import Job, prep_tokenizer, write_indexed_datasets
from megatron_optiml.tokenizer import OPT_TOKENIZER_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data_prep import SHARED, make_config  # noqa: E402

KEYS = ("prompt", "target")
IMAP_CHUNKSIZE = 32  # preprocess_data.py: pool.imap(encoder.encode, fin, 32)


# --- the peer: legacy GPT-2 BPE (OpenAI's encoder.py algorithm), written for this benchmark ---


def _byte_to_char() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


class LegacyGPT2BPE:
    """Byte-level BPE in pure Python with an unbounded word cache, as Megatron's legacy class.

    Per text: `regex.findall` of GPT-2's pattern; per word: its UTF-8 bytes mapped to
    characters, joined; `bpe(word)` (cache hit, or merges applied lowest rank first over the
    word's symbol pairs until none applies, result cached as a space-joined string); split on
    spaces; each symbol looked up in the special tokens (none), then the vocabulary.
    """

    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self, vocab_file: Path, merges_file: Path) -> None:
        with open(vocab_file, encoding="utf-8") as f:
            self.encoder = json.load(f)
        self.byte_encoder = _byte_to_char()
        with open(merges_file, encoding="utf-8") as f:
            lines = f.read().split("\n")[1:-1]  # a version header, a final newline
        self.bpe_ranks = {tuple(line.split()): rank for rank, line in enumerate(lines)}
        self.cache: dict[str, str] = {}
        self.special_tokens: dict[str, int] = {}
        self.pat = regex.compile(self.PATTERN)
        self.eod = self.encoder["<|endoftext|>"]

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = _pairs(word)
        if not pairs:
            return token
        while True:
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def tokenize(self, text: str) -> list[str]:
        symbols: list[str] = []
        for token in regex.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            symbols.extend(s for s in self.bpe(token).split(" "))
        return symbols

    def encode(self, text: str) -> list[int]:
        ids = []
        for symbol in self.tokenize(text):
            if symbol in self.special_tokens:
                ids.append(self.special_tokens[symbol])
            else:
                ids.append(self.encoder.get(symbol, 0))
        return ids


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word, word[1:]))


def _legacy_tokenizer() -> LegacyGPT2BPE:
    return LegacyGPT2BPE(OPT_TOKENIZER_DIR / "vocab.json", OPT_TOKENIZER_DIR / "merges.txt")


class _PeerEncoder:
    """preprocess_data.py's `Encoder`: the tokenizer lives on the class, one per worker."""

    tokenizer: LegacyGPT2BPE

    def initializer(self) -> None:
        _PeerEncoder.tokenizer = _legacy_tokenizer()

    def encode(self, json_line: str):
        data = json.loads(json_line)
        ids, lens = {}, {}
        for key in KEYS:
            doc = _PeerEncoder.tokenizer.encode(data[key])
            sentence_lens = [len(doc)] if doc else []
            if doc:  # --append-eod
                doc.append(_PeerEncoder.tokenizer.eod)
                sentence_lens[-1] += 1
            ids[key], lens[key] = doc, sentence_lens
        return ids, lens, len(json_line)


def run_peer(jsonl: Path, prefix: Path, workers: int) -> float:
    """The tool's `process_json_file` with one partition; returns wall seconds."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    t0 = time.perf_counter()
    fin = open(jsonl, encoding="utf-8")
    encoder = _PeerEncoder()
    tokenizer = _legacy_tokenizer()
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=encoder.initializer)
    encoded = pool.imap(encoder.encode, fin, IMAP_CHUNKSIZE)
    builders = {
        key: IndexedDatasetBuilder(
            f"{prefix}_{key}_document.bin", dtype=DType.optimal_dtype(len(tokenizer.encoder))
        )
        for key in KEYS
    }
    for doc, sentence_lens, _ in encoded:
        for key in doc:
            builders[key].add_document(doc[key], sentence_lens[key])
    fin.close()
    for key in KEYS:
        builders[key].finalize(f"{prefix}_{key}_document.idx")
    pool.close()
    pool.join()
    return time.perf_counter() - t0


# --- input and checks ---


def build_input(tasks, spec, copies: int, jsonl: Path, out: Path) -> tuple[list[Job], int]:
    """Write the JSONL (copy by copy, task by task) and the matching jobs for ours."""
    jobs = []
    n = 0
    with open(jsonl, "w", encoding="utf-8") as f:
        for c in range(copies):
            split = f"copy{c}"
            for task in tasks:
                jobs.append(Job(split=split, task=task, prefix=out / split / task.name))
                for i, inst in enumerate(task.instances):
                    rng = random.Random(f"{spec.seed}:{split}:{task.name}:{i}")
                    ex = render_sampled(
                        task,
                        inst,
                        rng,
                        shots=spec.shots,
                        delimiters=spec.delimiters,
                        demo_separator=spec.demo_separator,
                    )
                    f.write(json.dumps({"prompt": ex.prompt, "target": ex.target}) + "\n")
                    n += 1
    return jobs, n


def _sequences(prefix) -> tuple[np.ndarray, np.ndarray]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    tokens = np.fromfile(f"{prefix}.bin", dtype=ds.index.dtype)
    return tokens, np.array(ds.index.sequence_lengths, dtype=np.int64)  # a copy: mmap closes


def check_same_ids(peer_prefix: Path, jobs: list[Job]) -> tuple[bool, int]:
    """Peer prompt/target docs (eod dropped) == ours (prompt, target without </s>); tokens."""
    pt, pl = _sequences(f"{peer_prefix}_prompt_document")
    tt, tl = _sequences(f"{peer_prefix}_target_document")
    ours = [_sequences(job.prefix) for job in jobs]
    o_tok = np.concatenate([t for t, _ in ours])
    o_len = np.concatenate([ln for _, ln in ours]).astype(np.int64)
    o_ends = np.cumsum(o_len)
    o_prompt, o_target = o_len[0::2], o_len[1::2]
    if not (np.array_equal(pl - 1, o_prompt) and np.array_equal(tl, o_target)):
        return False, 0
    # Ours with the </s> of each target removed, vs the peer's prompt and target streams
    # interleaved with their eods removed.
    o_keep = np.ones(len(o_tok), bool)
    o_keep[o_ends[1::2] - 1] = False
    p_keep = np.ones(len(pt), bool)
    p_keep[np.cumsum(pl) - 1] = False
    t_keep = np.ones(len(tt), bool)
    t_keep[np.cumsum(tl) - 1] = False
    peer_docs = np.split(pt[p_keep], np.cumsum(o_prompt)[:-1])
    peer_tgts = np.split(tt[t_keep], np.cumsum(o_target - 1)[:-1])
    merged = np.concatenate([x for pair in zip(peer_docs, peer_tgts) for x in pair])
    same = np.array_equal(merged, o_tok[o_keep])
    return same, int(len(merged))


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--copies", type=int, default=4, help="renderings of each example")
    ap.add_argument("--max-per-task", type=int, default=None, help="cap per task (quick runs)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per row (min counts)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    cfg = make_config(args.data, 1)
    t0 = time.perf_counter()
    tasks, _ = read_sources(cfg.sources, TaskMap())
    read_secs = time.perf_counter() - t0
    if args.max_per_task:
        tasks = [t.with_instances(t.instances[: args.max_per_task]) for t in tasks]
    # No truncation, so every example's ids can be compared with the peer's.
    spec = dataclasses.replace(render_spec(cfg), max_seq_length=1 << 30)

    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jsonl = tmp / "input.jsonl"
        jobs, n_docs = build_input(tasks, spec, args.copies, jsonl, tmp / "ours")
        print(
            f"input: {args.data}, {len(tasks)} tasks x {args.copies} copies = {n_docs:,} "
            f"documents, JSONL {jsonl.stat().st_size / 2**20:.1f} MiB "
            f"(ours reads its sources in {read_secs:.2f} s, not timed)"
        )
        print(f"load average before: {_load()} ({os.cpu_count()} cores)")
        tokens = 0
        for rep in range(args.repeat):
            for workers in args.workers:
                name = f"peer, {workers} worker(s)"
                peer_prefix = tmp / "peer" / f"w{workers}"
                peer_prefix.parent.mkdir(exist_ok=True)
                secs = run_peer(jsonl, peer_prefix, workers)
                best[name] = min(best.get(name, secs), secs)

                name = f"ours, {workers} worker(s)"
                shutil.rmtree(tmp / "ours", ignore_errors=True)
                prep_tokenizer.cache_clear()  # cold, as the peer's workers start
                t0 = time.perf_counter()
                st = write_indexed_datasets(jobs, spec, workers=workers, progress=False)
                secs = time.perf_counter() - t0
                best[name] = min(best.get(name, secs), secs)
                if rep == 0 and not tokens:
                    same, tokens = check_same_ids(peer_prefix, jobs)
                    print(f"peer ids == ours for every prompt and target: {same}")
                    assert st.examples == n_docs
        print(f"load average after: {_load()}")
    print(f"\ntext tokens (no eod/</s>): {tokens:,}; min of {args.repeat} interleaved runs")
    print("\n| run | seconds | tokens/s |\n|---|---:|---:|")
    for name, secs in best.items():
        print(f"| {name} | {secs:.2f} | {tokens / secs:,.0f} |")
    print()
    for workers in args.workers:
        peer, ours = best[f"peer, {workers} worker(s)"], best[f"ours, {workers} worker(s)"]
        print(f"{workers} worker(s): ours {ours:.2f} s, peer {peer:.2f} s: {peer / ours:.2f}x")


if __name__ == "__main__":
    main()
