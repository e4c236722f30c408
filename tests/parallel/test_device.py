"""trainer.accelerator decides the device once (megatron_optiml/parallel/device.py): 'cpu' keeps a
run on the CPU backend on a node with CUDA, 'gpu' without CUDA fails before anything is built."""

import pytest
import torch

from megatron_optiml.backend import cpu as cpu_backend
from megatron_optiml.config import config_from_dict
from megatron_optiml.parallel import device
from megatron_optiml.parallel.device import resolve_accelerator
from megatron_optiml.testing.distributed import run_distributed


@pytest.mark.parametrize(
    ("accelerator", "cuda", "expected"),
    [
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("cpu", True, "cpu"),
        ("cpu", False, "cpu"),
        ("gpu", True, "cuda"),
    ],
)
def test_resolve(accelerator, cuda, expected):
    assert resolve_accelerator(accelerator, cuda_available=cuda) == expected


def test_gpu_without_cuda_and_unknown_values_are_refused():
    with pytest.raises(ValueError, match="trainer.accelerator='gpu': no CUDA device"):
        resolve_accelerator("gpu", cuda_available=False)
    with pytest.raises(ValueError, match="trainer.accelerator='tpu': expected one of"):
        resolve_accelerator("tpu", cuda_available=True)


def _cfg(**trainer):
    return config_from_dict(
        {"trainer": trainer, "model": {"data": {"blend_path": "b.json"}, "flavor": "opt-debug"}}
    )


def test_run_config_honours_the_accelerator(monkeypatch):
    # A node with CUDA and Transformer Engine, as far as the config can tell.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cpu_backend, "is_installed", lambda: False)
    monkeypatch.setattr(
        "megatron_optiml.utils.optional.have_transformer_engine", lambda: True, raising=True
    )
    assert _cfg(accelerator="auto").resolved_transformer_impl() == "transformer_engine"
    assert _cfg(accelerator="cpu").resolved_transformer_impl() == "local"
    # GPU-only features are refused for a CPU run even where CUDA exists.
    cfg = _cfg(accelerator="cpu", precision="fp8")
    with pytest.raises(ValueError, match="trainer.precision='fp8': FP8 needs a GPU"):
        cfg.validate(cuda_available=True, have_te=True)
    _cfg(accelerator="gpu", precision="fp8").validate(cuda_available=True, have_te=True)


def test_gpu_accelerator_without_cuda_fails_before_building():
    from megatron_optiml.training.trainer import Trainer

    cfg = _cfg(accelerator="gpu")
    with pytest.raises(ValueError, match="trainer.accelerator='gpu': no CUDA device"):
        cfg.validate(cuda_available=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="trainer.accelerator='gpu'"):
            Trainer(cfg)  # validates in __init__: no process group, no model


def fake_cuda_node_worker(rank, world_size, accelerator):
    """Pretend CUDA is present on a machine without a GPU: any code path of ours that believes
    it (NCCL, set_device, CUDA tensors) fails, so a step that completes stayed on the CPU."""
    real_is_available = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_optiml.parallel import init_distributed
    from megatron_optiml.testing.parity import ParityCase, fixed_global_batch, parity_config
    from megatron_optiml.training.build import build_model, build_optimizer
    from megatron_optiml.training.step import forward_step

    assert resolve_accelerator("auto") == "cuda"  # the fake works: 'auto' would pick CUDA
    init_distributed(accelerator=accelerator)
    case = ParityCase(global_batch_size=2, micro_batch_size=2, seq_length=16)
    cfg = parity_config(case)
    cfg.trainer.accelerator = accelerator
    built = build_model(cfg)
    optimizer, _ = build_optimizer(cfg, built.model)
    batch = fixed_global_batch(case)
    get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter([batch]),
        model=built.model,
        num_microbatches=1,
        seq_length=case.seq_length,
        micro_batch_size=case.micro_batch_size,
        forward_only=False,
    )
    # A CUDA build of torch: its own Adam asks the CUDA runtime whether a graph is being
    # captured (a real GPU node answers; a faked one has no driver). The tensors are on CPU.
    torch.cuda.is_available = real_is_available
    ok, grad_norm, _ = optimizer.step()
    return {
        "uses_cuda": device.uses_cuda(),
        "shim": cpu_backend.is_installed(),
        "backend": torch.distributed.get_backend(),
        "devices": sorted({p.device.type for p in built.model[0].parameters()}),
        "impl": cfg.resolved_transformer_impl(),
        "stepped": bool(ok) and grad_norm > 0,
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="fakes CUDA on a CPU-only torch")
def test_cpu_accelerator_stays_on_cpu_where_cuda_exists():
    (out,) = run_distributed(fake_cuda_node_worker, 1, "cpu", timeout=240)
    assert out == {
        "uses_cuda": False,
        "shim": True,
        "backend": "gloo",
        "devices": ["cpu"],
        "impl": "local",
        "stepped": True,
    }


def test_the_planner_plans_a_cpu_run_with_the_local_spec():
    from megatron_optiml.planning.recipe import plan_input_from_run_config

    assert plan_input_from_run_config(_cfg(accelerator="cpu"))[0]["transformer_impl"] == "local"
    auto = plan_input_from_run_config(_cfg(accelerator="auto"))[0]
    assert auto["transformer_impl"] == "transformer_engine"  # what a GPU node with TE runs
