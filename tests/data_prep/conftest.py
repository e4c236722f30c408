"""Shared fixtures: the bundled bench config and one build of it per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.config import load_config

REPO = Path(__file__).resolve().parents[2]
BENCH_CONFIG = REPO / "examples" / "data_prep" / "bench_config.yaml"


@pytest.fixture
def bench_config():
    return load_config(BENCH_CONFIG)


@pytest.fixture(scope="session")
def built_bench(tmp_path_factory):
    """The bundled sample built once with one worker (the pipeline's reference run)."""
    from data_prep.pipeline import build_bench

    cfg = load_config(BENCH_CONFIG)
    cfg.tokenize.workers = 1
    out = tmp_path_factory.mktemp("bench") / "out"
    return cfg, build_bench(cfg, out, progress=False)
