"""Fixtures of the evaluation tests: tiny random HF OPT models and a hand-made bench folder."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import bench_tasks, tiny_opt, train_tasks

from data_prep.schema import write_tasks_jsonl


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_opt(0)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("models")
    dirs = []
    for seed, name in ((0, "base"), (1, "tuned")):
        d = root / name
        tiny_opt(seed).save_pretrained(d)
        dirs.append(d)
    return dirs


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory):
    """What `optiml-prepare` writes that evaluation reads: bench/<split>.jsonl (+ train)."""
    root = tmp_path_factory.mktemp("bench")
    for split, tasks in bench_tasks().items():
        write_tasks_jsonl(tasks, root / "bench" / f"{split}.jsonl")
    write_tasks_jsonl(train_tasks(), root / "bench" / "train.jsonl")
    (root / "splits.json").write_text(json.dumps({}), encoding="utf-8")
    return root
