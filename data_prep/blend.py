"""Blend weights: EPS within a benchmark, then fixed per-benchmark shares (metaseq PR #488).

The paper (§4.2-4.3) gives EPS=4096 and the shares but not the two-level algorithm; we follow
metaseq's `opt_instruct` branch, PR #488 "Add data proportions" (research notes §5.2):

1. cap_i = min(n_i, benchmark_caps[b] or eps_cap)           (examples-proportional, capped)
2. p_i   = cap_i / sum_j cap_j                                (over all tasks)
3. P_b   = sum_{i in b} p_i                                   (natural benchmark mass)
4. target_b = shares[b] for listed benchmarks; P_b * (1 - sum of listed shares) otherwise
5. w_i   = p_i * target_b / P_b, then normalized to sum to 1.

Shares are taken over the listed benchmarks *present in the data*, and the final weights are
renormalized, so shares act as relative proportions: the paper's 45/25/20/4/2/2/2 plus 1%
reasoning and 5% pre-training sums to 106% and becomes 45/106, ..., 5/106 (our reading;
metaseq's exact handling of that sum is unverified).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BLEND_FORMAT = "megatron_optiml.blend/v1"


@dataclass(frozen=True)
class DatasetEntry:
    """One indexed dataset in a blend."""

    prefix: str  # relative to the blend file's folder, no .bin/.idx
    task: str
    benchmark: str
    category: str
    num_examples: int
    num_tokens: int = 0
    longest: int = 0  # tokens of the longest example


def blend_weights(
    entries: Sequence[DatasetEntry],
    *,
    eps_cap: int,
    benchmark_shares: Mapping[str, float],
    benchmark_caps: Mapping[str, int] | None = None,
) -> list[float]:
    """Sampling weight of each entry (sums to 1; 0 for entries without examples)."""
    caps = benchmark_caps or {}
    capped = [min(e.num_examples, caps.get(e.benchmark, eps_cap)) for e in entries]
    total = sum(capped)
    if total == 0:
        return [0.0] * len(entries)
    p = [c / total for c in capped]
    mass: dict[str, float] = {}
    for e, pi in zip(entries, p):
        mass[e.benchmark] = mass.get(e.benchmark, 0.0) + pi
    present = {b for b, m in mass.items() if m > 0}
    listed = {b: s for b, s in benchmark_shares.items() if b in present}
    missing = sorted(set(benchmark_shares) - present)
    if missing:
        log.info(
            "benchmarks with a share but no data (their share is dropped): %s", ", ".join(missing)
        )
    rest = max(0.0, 1.0 - math.fsum(listed.values()))
    target = {b: listed.get(b, mass[b] * rest) for b in present}
    w = [
        pi * target[e.benchmark] / mass[e.benchmark] if pi > 0 else 0.0 for e, pi in zip(entries, p)
    ]
    # math.fsum, not sum(): sum() of floats rounds differently on Python 3.11 and 3.12.
    s = math.fsum(w)
    if s == 0:
        raise ValueError("blend: every benchmark present has share 0")
    return [x / s for x in w]


def write_blend(
    out_dir: Path,
    per_split: Mapping[str, tuple[Sequence[DatasetEntry], Sequence[float]]],
    *,
    eps_cap: int,
    benchmark_shares: Mapping[str, float],
    max_seq_length: int | None = None,
) -> Path:
    """Write blend.json and data_args_<split>.txt atomically; entries with weight 0 are left out.

    ``max_seq_length`` (render.max_seq_length) and each split's ``longest_example`` (tokens) let
    the trainer check ``model.data.seq_length`` against the data (megatron_optiml/data/blend.py).
    """
    splits = {}
    for split, (entries, weights) in per_split.items():
        kept = [(e, w) for e, w in zip(entries, weights) if w > 0]
        splits[split] = {
            "prefixes": [e.prefix for e, _ in kept],
            "weights": [round(w, 12) for _, w in kept],
            "num_examples": [e.num_examples for e, _ in kept],
        }
        if max_seq_length is not None:
            splits[split]["longest_example"] = max((e.longest for e, _ in kept), default=0)
        args = " ".join(f"{round(w, 12)!r} {e.prefix}" for e, w in kept)
        _atomic_write(out_dir / f"data_args_{split}.txt", args + "\n")
    blend = {
        "format": BLEND_FORMAT,
        "splits": splits,
        "benchmark_shares": dict(sorted(benchmark_shares.items())),
        "eps_cap": eps_cap,
    }
    if max_seq_length is not None:
        blend["max_seq_length"] = max_seq_length
    path = out_dir / "blend.json"
    _atomic_write(path, json.dumps(blend, indent=2, sort_keys=False) + "\n")
    return path


def load_blend(path: str | os.PathLike) -> dict:
    """Read a blend.json; prefixes become absolute paths (what Megatron-Core's builder takes)."""
    path = Path(path)
    blend = json.loads(path.read_text(encoding="utf-8"))
    if blend.get("format") != BLEND_FORMAT:
        raise ValueError(f"{path}: format={blend.get('format')!r}, expected {BLEND_FORMAT!r}")
    for split in blend["splits"].values():
        split["prefixes"] = [str(path.parent / p) for p in split["prefixes"]]
    return blend


def blend_per_split(path: str | os.PathLike) -> list[tuple[list[str], list[float]] | None]:
    """[train, valid, test] in the form `BlendedMegatronDatasetConfig(blend_per_split=...)` takes."""
    blend = load_blend(path)["splits"]
    out: list[tuple[list[str], list[float]] | None] = []
    for name in ("train", "validation", "test"):
        s = blend.get(name)
        out.append((s["prefixes"], s["weights"]) if s and s["prefixes"] else None)
    return out


def summary_rows(entries: Sequence[DatasetEntry], weights: Sequence[float], key: str) -> list[dict]:
    """Per-benchmark or per-category totals: tasks, examples, tokens, weight."""
    rows: dict[str, dict] = {}
    parts: dict[str, list[float]] = {}
    for e, w in zip(entries, weights):
        k = getattr(e, key)
        r = rows.setdefault(k, {key: k, "tasks": 0, "examples": 0, "tokens": 0, "weight": 0.0})
        r["tasks"] += 1
        r["examples"] += e.num_examples
        r["tokens"] += e.num_tokens
        parts.setdefault(k, []).append(w)
    for k, r in rows.items():
        # Exactly rounded, then to blend.json's 12 digits: the same bytes on every Python.
        r["weight"] = round(math.fsum(parts[k]), 12)
    return [rows[k] for k in sorted(rows)]


def format_table(rows: Sequence[dict], key: str) -> str:
    """A Markdown table of `summary_rows`."""
    lines = [f"| {key} | tasks | examples | tokens | weight |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r[key]} | {r['tasks']} | {r['examples']:,} | {r['tokens']:,} | {r['weight']:.4f} |"
        )
    t = {f: sum(r[f] for r in rows) for f in ("tasks", "examples", "tokens")}
    t["weight"] = math.fsum(r["weight"] for r in rows)
    lines.append(
        f"| **total** | {t['tasks']} | {t['examples']:,} | {t['tokens']:,} | {t['weight']:.4f} |"
    )
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)
