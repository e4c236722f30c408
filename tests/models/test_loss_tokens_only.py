"""``OPTModel`` runs the output layer on the loss tokens only and computes what ``GPTModel``
computes on every position: the same masked per-token losses and the same gradients, at TP 1
and 2, for partial, empty-row and all-zero loss masks."""

from __future__ import annotations

import pytest

from megatron_optiml.testing.distributed import run_distributed
from megatron_optiml.testing.loss_tokens import loss_tokens_worker

# fp32 opt-debug: the selected rows go through the same GEMMs and the same cross entropy, so
# only summation order differs (observed 0 to 1e-7); a wrong row (off-by-one, [b s] vs [s b]
# order) changes losses by ~1 and gradients by far more than this.
LOSS_TOL = 1e-5
GRAD_TOL = 1e-6


def _check(result):
    for name, r in result.items():
        assert r["shape"][0] == r["shape"][1], (name, r)  # [b, s] on both paths
        assert r["loss"] < LOSS_TOL, (name, r)
        assert r["grads"] < GRAD_TOL, (name, r)
    assert result["partial"]["loss_sum"] > 1.0  # the comparison is not of zeros
    assert result["partial"]["grad_scale"] > 1e-3
    assert result["all_zero"]["loss_sum"] == 0.0


@pytest.fixture(scope="module")
def tp1():
    (out,) = run_distributed(loss_tokens_worker, 1, 1, timeout=180)
    return out


def test_loss_tokens_only_matches_every_position(tp1):
    _check(tp1)


@pytest.mark.distributed
def test_loss_tokens_only_matches_every_position_at_tp2():
    for result in run_distributed(loss_tokens_worker, 2, 2, timeout=180):
        _check(result)
