"""The rank harness: ranks forked from the warm fork server see the caller as it is now (its
environment, its output streams), not as it was when the server started; errors and hangs come
back as ``DistributedRunError``."""

from __future__ import annotations

import os
import sys

import pytest

from megatron_optiml.testing.distributed import DistributedRunError, run_distributed

pytestmark = pytest.mark.distributed


def env_worker(rank, world_size, names):
    print(f"rank {rank} says hello", flush=True)
    print(f"rank {rank} on stderr", file=sys.stderr, flush=True)
    return {
        "env": {n: os.environ.get(n) for n in names},
        "rank": (os.environ["RANK"], os.environ["WORLD_SIZE"]),
        "threads": __import__("torch").get_num_threads(),
        "pid": os.getpid(),
        "warm": "megatron_optiml.training.trainer" in sys.modules,  # rank_preload's imports
    }


def failing_worker(rank, world_size):
    if rank == 1:
        raise RuntimeError("rank one fails on purpose")
    return rank


def hanging_worker(rank, world_size):
    import time

    time.sleep(600)


NAMES = ["OPTIML_TEST_SET_LATE", "OPTIML_TEST_REMOVED", "OPTIML_TEST_OVERRIDE"]


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_ranks_see_the_callers_current_environment_and_streams(start_method, monkeypatch, capfd):
    monkeypatch.setenv("OPTIML_TEST_REMOVED", "x")
    if start_method == "forkserver":
        run_distributed(env_worker, 1, NAMES)  # the server is up now, with this environment
    monkeypatch.delenv("OPTIML_TEST_REMOVED")
    monkeypatch.setenv("OPTIML_TEST_SET_LATE", "late")
    capfd.readouterr()
    results = run_distributed(
        env_worker, 2, NAMES, env={"OPTIML_TEST_OVERRIDE": "given"}, start_method=start_method
    )
    for rank, r in enumerate(results):
        assert r["env"] == {
            "OPTIML_TEST_SET_LATE": "late",
            "OPTIML_TEST_REMOVED": None,
            "OPTIML_TEST_OVERRIDE": "given",
        }
        assert r["rank"] == (str(rank), "2") and r["threads"] == 1
        assert r["warm"] == (start_method == "forkserver")
    assert results[0]["pid"] != results[1]["pid"] != os.getpid()
    out, err = capfd.readouterr()
    assert "rank 0 says hello" in out and "rank 1 says hello" in out
    assert "rank 1 on stderr" in err
    assert "OPTIML_TEST_OVERRIDE" not in os.environ  # env= is for the ranks only


def test_a_failing_rank_raises_with_its_traceback():
    with pytest.raises(DistributedRunError, match="rank 1 raised") as e:
        run_distributed(failing_worker, 2)
    assert "rank one fails on purpose" in str(e.value)


def test_a_hung_rank_is_killed_at_the_timeout():
    with pytest.raises(DistributedRunError, match=r"ranks \[0\] still running after 3s"):
        run_distributed(hanging_worker, 1, timeout=3)


def test_unknown_start_method_is_refused():
    with pytest.raises(ValueError, match="start_method='fork'"):
        run_distributed(env_worker, 1, NAMES, start_method="fork")
