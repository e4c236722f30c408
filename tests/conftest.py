"""Shared pytest setup: GPU tests skip without CUDA; ranks use one thread each."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def bench_blend(tmp_path_factory) -> Path:
    """The bundled OPT-IML Bench sample, prepared by data_prep (~6 s)."""
    out = tmp_path_factory.mktemp("bench") / "bench"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep",
            "--config",
            str(ROOT / "examples/data_prep/bench_config.yaml"),
            "--out",
            str(out),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return out / "blend.json"
