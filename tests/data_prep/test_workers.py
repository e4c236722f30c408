"""`WorkerPool`: values inherited at fork or shared later reach the workers; order is kept."""

import os

import pytest

from data_prep.workers import WorkerPool


def _read(item):
    handle, k = item
    return os.getpid(), handle.get()[k], os.environ.get("TOKENIZERS_PARALLELISM")


@pytest.mark.parametrize("workers", [1, 2])
def test_inherited_and_shared_values_reach_the_workers(workers):
    with WorkerPool(workers, early=["a", "b", "c"]) as pool:
        late = pool.share("late", [10, 20, 30])
        early = pool.inherited["early"]
        got = list(pool.imap(_read, [(early, k) for k in range(3)] + [(late, k) for k in range(3)]))
    assert [value for _, value, _ in got] == ["a", "b", "c", 10, 20, 30]
    pids = {pid for pid, _, _ in got}
    if workers == 1:
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids
        assert {env for _, _, env in got} == {"false"}  # one tokenizer thread per worker
    with pytest.raises(RuntimeError, match="gone"):
        early.get()


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers=0"):
        WorkerPool(0)


def _die_on_two(k):
    if k == 2:
        os.kill(os.getpid(), 9)  # as the OOM killer would
    return k


@pytest.mark.timeout(60)
def test_a_killed_worker_fails_the_build_instead_of_hanging():
    with WorkerPool(2) as pool, pytest.raises(RuntimeError, match="worker process died"):
        list(pool.imap(_die_on_two, range(6)))
