"""The CPU backend shim: installed only without CUDA, and each patch point does its job."""

import subprocess
import sys
import textwrap

import pytest
import torch

from megatron_optiml.backend import cpu
from megatron_optiml.testing.distributed import run_distributed


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_not_installed_when_cuda_is_present():
    # Pretend CUDA exists: install() must patch nothing.
    last = _run(
        """
        import torch
        torch.cuda.is_available = lambda: True
        orig = torch.cuda.current_device
        from megatron_optiml.backend import cpu
        print(cpu.install(), cpu.is_installed(), torch.cuda.current_device is orig)
        """
    )
    assert last == "False False True"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_patch_points_in_a_fresh_process():
    last = _run(
        """
        import torch
        from megatron_optiml.backend import cpu
        assert cpu.install() and cpu.install()  # idempotent
        t = torch.zeros(3, device="cuda")
        u = torch.ones(2, device=torch.cuda.current_device())
        assert t.device.type == "cpu" and u.device.type == "cpu"
        assert t.cuda() is t
        assert t.type() == "torch.cuda.FloatTensor"
        assert t.type(torch.float64).dtype == torch.float64  # conversions untouched
        assert t.to("cuda").device.type == "cpu"
        torch.cuda.synchronize()
        torch.cuda.manual_seed(7); a = torch.rand(4)
        state = torch.cuda.get_rng_state(); b = torch.rand(4)
        torch.cuda.set_rng_state(state); c = torch.rand(4)
        assert torch.equal(b, c)
        torch.manual_seed(7); assert torch.equal(a, torch.rand(4))

        class Twice(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return 2 * x
            @staticmethod
            def backward(ctx, g):
                # Megatron allocates CUDA buffers inside backward (sequence parallel).
                return torch.full_like(g, 2.0) * torch.ones(1, device="cuda")
        x = torch.ones(3, requires_grad=True)
        Twice.apply(x).sum().backward()
        assert torch.equal(x.grad, torch.full((3,), 2.0))
        from megatron_optiml.backend import compat
        points = compat.cpu_patch_points()
        if "current_stream" in points:
            s = torch.cuda.current_stream()
            s.wait_stream(s); s.wait_event(None)  # megatron-core 0.19 start_grad_sync
        else:
            assert torch.cuda.current_stream is not cpu._current_stream
        # Megatron's clipping scales the grads in place through the one-pass fallback.
        from megatron.core.optimizer import clip_grads
        ps_ = [torch.nn.Parameter(torch.ones(4)) for _ in range(2)]
        for p in ps_:
            p.grad = torch.full((4,), 3.0)
        grads = [p.grad for p in ps_]
        clip_grads.clip_grad_by_total_norm_fp32(ps_, max_norm=1.0, total_norm=12.0)
        assert all(g is p.grad for g, p in zip(grads, ps_))
        assert torch.allclose(ps_[0].grad, torch.full((4,), 3.0 / (12.0 + 1e-6)))
        half = torch.zeros(4, dtype=torch.bfloat16)
        from megatron.core.optimizer import optimizer as mopt
        mopt._multi_tensor_copy_this_to_that([torch.full((4,), 1.5)], [half], torch.zeros(1))
        assert torch.equal(half, torch.full((4,), 1.5, dtype=torch.bfloat16))
        missing = [k for k in points if cpu.HITS[k] == 0]
        print("missing", missing)
        """
    )
    assert last == "missing []"


def rng_tracker_worker(rank, world_size):
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    from megatron_optiml.parallel import init_distributed

    init_distributed(seed=11)
    with get_cuda_rng_tracker().fork():
        forked = torch.rand(2)
    default_after_fork = torch.rand(2)
    model_parallel_cuda_manual_seed(11)
    default_plain = torch.rand(2)
    model_parallel_cuda_manual_seed(11)
    with get_cuda_rng_tracker().fork():
        forked_again = torch.rand(2)
    # Deterministic fork, distinct from the default stream, which it does not consume.
    return (
        torch.equal(forked, forked_again),
        not torch.equal(forked, default_plain),
        torch.equal(default_after_fork, default_plain),
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_megatron_rng_tracker_forks_on_cpu():
    # A rank of its own (the shim and the process group stay out of the test process).
    assert run_distributed(rng_tracker_worker, 1, timeout=120) == [(True, True, True)]


def test_every_patch_point_is_one_the_shim_knows():
    from megatron_optiml.backend import compat

    for line, points in compat.CPU_PATCH_POINTS.items():
        assert set(points) <= set(cpu.PATCH_POINTS), line
        for name, where in points.items():
            assert ".py" in where, (line, name)  # each names its call sites
