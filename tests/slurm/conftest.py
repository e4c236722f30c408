"""Session fixtures for the Slurm tests: a private single-node cluster and the bundled data.

The cluster is started once per session and always torn down (jobs cancelled, daemons stopped
by pid, state removed), also when a test fails. Without Slurm installed (the CI installs it:
scripts/ci_system_deps.sh) or without root (slurmd must launch jobs), the tests skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from local_slurm import LocalSlurm, missing_binaries

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm not installed ({', '.join(missing)}): scripts/ci_system_deps.sh")
    if os.geteuid() != 0:
        pytest.skip("a private slurmd must run as root to launch jobs")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
