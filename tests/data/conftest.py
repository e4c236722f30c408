"""Fixtures: small instruction-example datasets in the architecture.md format, and a blend."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import write_blend


@pytest.fixture(scope="session")
def blend_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("blend")
    return write_blend(
        root,
        {
            "train": {"n": [60, 40, 25], "weights": [0.5, 0.3, 0.2]},
            "validation": {"n": [20, 15], "weights": [0.5, 0.5]},
            "test": {"n": [10], "weights": [1.0]},
        },
    )
