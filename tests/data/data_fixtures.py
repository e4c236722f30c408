"""Small instruction-example datasets in the architecture.md format, and a blend (shared by
tests/data; a module of its own so no test imports a ``conftest`` by name, which resolves to
whichever of the suite's conftest modules was imported first)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from megatron_optiml.data import write_examples

EOS = 2


def make_task(rng: np.random.Generator, task: int, n: int, max_prompt: int, max_target: int):
    """Examples whose first token names (task, index), so a pack can be traced back.

    About one in five prompts is empty (pre-training style: loss on the whole text).
    """
    examples = []
    for i in range(n):
        tag = 1000 + 100 * task + i  # unique, never pad (1) or </s> (2)
        p = 0 if rng.random() < 0.2 else int(rng.integers(1, max_prompt + 1))
        t = int(rng.integers(1, max_target + 1))
        body = rng.integers(3, 999, p + t - 1).tolist()
        seq = [tag, *body]
        examples.append((seq[:p], seq[p:] + [EOS]))
    return examples


def write_blend(root: Path, tasks: dict[str, dict], seed: int = 0) -> Path:
    """Write ``indexed/<split>/<task>`` datasets and ``blend.json``; return the blend path.

    ``tasks``: ``{split: {"n": [...], "weights": [...], "max_prompt": int, "max_target": int}}``.
    """
    rng = np.random.default_rng(seed)
    splits = {}
    for split, spec in tasks.items():
        prefixes = []
        for t, n in enumerate(spec["n"]):
            rel = f"indexed/{split}/task{t:03d}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            ex = make_task(rng, t, n, spec.get("max_prompt", 40), spec.get("max_target", 12))
            write_examples(str(root / rel), ex)
            prefixes.append(rel)
        w = np.asarray(spec["weights"], dtype=float)
        splits[split] = {
            "prefixes": prefixes,
            "weights": (w / w.sum()).tolist(),
            "num_examples": list(spec["n"]),
        }
    path = root / "blend.json"
    path.write_text(json.dumps({"format": "megatron_optiml.blend/v1", "splits": splits}))
    return path


def read_all_examples(blend_path: Path, split: str) -> dict[int, list[int]]:
    """tag -> full example tokens (prompt + target), read back through the public loader."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_optiml.data import load_blend

    out = {}
    for prefix in load_blend(blend_path)[split][0]:
        ds = IndexedDataset(prefix)
        for i in range(len(ds) // 2):
            seq = np.concatenate([ds[2 * i], ds[2 * i + 1]]).astype(np.int64).tolist()
            out[seq[0]] = (seq, len(ds[2 * i]))
    return out
