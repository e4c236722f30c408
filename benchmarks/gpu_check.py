"""One-GPU checks for a lent GPU machine (run by ``benchmarks/gpu_check.sh``).

1. With CUDA present the CPU shim stays off, and the same Megatron-Core code runs on NCCL.
2. opt-debug (local spec): BF16 loss vs FP32 loss on the GPU, and vs the FP32 loss on CPU
   computed from the same canonical weights (BF16 tolerance).
3. Transformer Engine: is it importable? If so, TE spec vs local spec loss.
4. OPT-1.3B training-step throughput (BF16, distributed optimizer; local spec by default, and
   with GPU_CHECK_CONFIGS the TE spec in BF16 and FP8): TFLOP/s, MFU, and measured peak memory
   vs the planner's prediction.
Prints one JSON object per check and writes them all to ``$OUT/gpu_check.json``.
"""

from __future__ import annotations

import gc
import json
import os
import time
import traceback

import torch

from megatron_optiml.parallel import compute_device, uses_cuda

RESULTS: dict[str, object] = {}


def record(name: str, value) -> None:
    RESULTS[name] = value
    print(json.dumps({name: value}), flush=True)


def save_results(filename: str) -> None:
    """Everything recorded so far, as one JSON file in $OUT (the device tool brings it back)."""
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, filename), "w") as f:
            json.dump(RESULTS, f, indent=2)


def check(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - report and go on to the next check
        record(fn.__name__ + "_error", traceback.format_exc()[-2000:])
    return fn


def init_single_rank() -> None:
    """A 1-rank process group (NCCL on a GPU) and Megatron's parallel state, seed 1234."""
    from megatron_optiml.parallel import init_distributed
    from megatron_optiml.testing.distributed import free_port

    os.environ.update(
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )
    init_distributed(seed=1234)


def _init():
    from megatron_optiml.backend import cpu

    init_single_rank()
    record(
        "environment",
        {
            "device": torch.cuda.get_device_name() if uses_cuda() else "cpu",
            "torch": torch.__version__,
            "cpu_shim_installed": cpu.is_installed(),
            "backend": torch.distributed.get_backend(),
        },
    )


def _loss(model, batch):
    from megatron_optiml.training.step import masked_token_loss

    out = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    s, n, _ = masked_token_loss(batch["loss_mask"], out)
    return s / n


def _run_config(flavor: str, transformer_impl: str, precision: str, **model):
    """The benchmarked run as a run config (distributed Adam, lr 5e-5, sequence 2048 unless
    given): built by ``training/build.py`` as the trainer."""
    from megatron_optiml.config.one_step import one_step_run_config

    return one_step_run_config(
        lr=5e-5,
        precision=precision,
        seq_length=model.pop("seq_length", 2048),
        transformer_impl=transformer_impl,
        use_distributed_optimizer=True,
        flavor=flavor,
        **model,
    )


def _debug_model(transformer_impl: str, bf16: bool):
    """opt-debug with canonical weights, no dropout (the local spec's default SDPA attention)."""
    from megatron_optiml.conversion.sharding import Layout, load_shard_into_model, shard_state_dict
    from megatron_optiml.models.opt import get_flavor
    from megatron_optiml.models.opt.init import random_canonical_state_dict
    from megatron_optiml.training.build import build_model

    arch = get_flavor("opt-debug")
    cfg = _run_config(
        "opt-debug",
        transformer_impl,
        "bf16" if bf16 else "32",
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    full = random_canonical_state_dict(arch, seed=1234)
    shard = shard_state_dict(full, Layout(), arch.num_layers, transformer_impl=transformer_impl)
    built = build_model(cfg, load_weights=lambda chunks: load_shard_into_model(chunks[0], shard))
    return built.model[0]


def _batch(device):
    from megatron_optiml.testing.parity import ParityCase, fixed_global_batch

    b = fixed_global_batch(ParityCase(global_batch_size=4, seq_length=128))
    return {k: v.to(device) for k, v in b.items()}


def debug_losses():
    batch = _batch(compute_device())
    out = {}
    for impl in ("local", "transformer_engine"):
        for bf16 in (False, True):
            key = f"{impl}_{'bf16' if bf16 else 'fp32'}"
            try:
                model = _debug_model(impl, bf16)
            except Exception as e:  # noqa: BLE001
                out[key] = f"unavailable: {str(e)[:200]}"
                continue
            loss = _loss(model, batch)
            loss.backward()
            # DDP accumulates each gradient in the parameter's fp32 main_grad.
            grad_norm = (
                sum(float(p.main_grad.float().norm() ** 2) for p in model.parameters()) ** 0.5
            )
            out[key] = {"loss": float(loss), "grad_norm": grad_norm}
    if isinstance(out.get("local_bf16"), dict):
        out["local_bf16_minus_fp32"] = out["local_bf16"]["loss"] - out["local_fp32"]["loss"]
    if isinstance(out.get("transformer_engine_bf16"), dict):
        out["te_bf16_minus_local_bf16"] = (
            out["transformer_engine_bf16"]["loss"] - out["local_bf16"]["loss"]
        )
    record("opt_debug_losses", out)


def te_available():
    from megatron_optiml.utils.optional import have_transformer_engine

    record("transformer_engine_importable", have_transformer_engine())


def _opt_throughput(transformer_impl: str, fp8_recipe: str | None) -> dict:
    """One timed training-step loop of OPT-1.3B (or GPU_CHECK_FLAVOR) on one GPU."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_optiml.models.opt import get_flavor
    from megatron_optiml.planning.flops import step_flops
    from megatron_optiml.planning.hardware import ClusterSpec
    from megatron_optiml.planning.measure import gpu_step_plan_input
    from megatron_optiml.planning.plan import make_plan
    from megatron_optiml.training.build import build_model, build_optimizer
    from megatron_optiml.training.step import forward_step

    flavor = os.environ.get("GPU_CHECK_FLAVOR", "opt-1.3b")
    arch = get_flavor(flavor)
    mbs, seq, nmb = 4, int(os.environ.get("GPU_CHECK_SEQ", "2048")), 2
    cfg = _run_config(
        flavor,
        transformer_impl,
        "fp8" if fp8_recipe else "bf16",
        micro_batch_size=mbs,
        global_batch_size=mbs * nmb,
        seq_length=seq,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activations_checkpoint_granularity="selective",
        **({"fp8_recipe": fp8_recipe} if fp8_recipe else {}),
    )
    if uses_cuda():
        torch.cuda.reset_peak_memory_stats()
    # The local rows are documented (and planned) with Megatron-Core's unfused attention.
    built = build_model(cfg, core_attention="unfused")
    ddp = built.model[0]
    opt, _ = build_optimizer(cfg, built.model)
    torch.manual_seed(0)
    dev = compute_device()
    tokens = torch.randint(3, 50000, (mbs, seq), device=dev)
    batch = {
        "tokens": tokens,
        "labels": torch.roll(tokens, -1, 1),
        "loss_mask": torch.ones(mbs, seq, device=dev),
        "position_ids": torch.arange(seq, device=dev).expand(mbs, seq),
    }
    losses: list[float] = []

    def forward_backward():
        ddp.zero_grad_buffer()
        opt.zero_grad()
        out = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter([batch] * nmb),
            model=[ddp],
            num_microbatches=nmb,
            seq_length=seq,
            micro_batch_size=mbs,
            forward_only=False,
        )
        losses.append(out)

    def step():
        forward_backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    phases = {}
    if uses_cuda():
        # Peak of forward+backward alone vs. the optimizer step alone: torch's AdamW fallback
        # (no TE/apex FusedAdam) allocates foreach temporaries (sqrt(exp_avg_sq)).
        torch.cuda.reset_peak_memory_stats()
        forward_backward()
        torch.cuda.synchronize()
        phases["fwd_bwd_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        opt.step()
        torch.cuda.synchronize()
        phases["optimizer_step_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    n = int(os.environ.get("GPU_CHECK_STEPS", "10"))
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / n
    gbs = mbs * nmb
    flops = step_flops(arch, global_batch_size=gbs, seq_length=seq, recompute="selective")
    name = torch.cuda.get_device_name().lower() if uses_cuda() else "cpu"
    gpu = "h200-141gb" if "h200" in name else "h100-80gb"
    cluster = ClusterSpec.from_gpu(gpu, num_nodes=1, gpus_per_node=1)
    plan = make_plan(
        gpu_step_plan_input(
            arch,
            micro_batch_size=mbs,
            microbatches=nmb,
            seq_length=seq,
            transformer_impl=transformer_impl,
            fp8=fp8_recipe is not None,
        ),
        cluster,
    )
    peak_bf16 = cluster.gpu.peak_bf16_tflops * 1e12
    measured = torch.cuda.max_memory_allocated() if uses_cuda() else 0
    predicted_no_overhead = plan.peak.total - plan.peak.overhead - plan.peak.fragmentation
    # The loss of the last micro-batches: a broken FP8 path shows up as NaN or a jump.
    last = [float(d["lm loss"][0] / d["lm loss"][1]) for d in losses[-1]] if losses[-1] else []
    return {
        "transformer_impl": transformer_impl,
        "fp8_recipe": fp8_recipe,
        "micro_batch": mbs,
        "microbatches": nmb,
        "seq": seq,
        "step_s": dt,
        "tokens_per_s": gbs * seq / dt,
        "model_tflops": flops.model / dt / 1e12,
        "mfu": flops.model / dt / peak_bf16,
        "last_losses": last,
        "peak_mem_gib_measured": measured / 2**30,
        "peak_mem_gib_predicted_without_overhead": predicted_no_overhead / 2**30,
        "prediction_error": predicted_no_overhead / measured - 1 if measured else None,
        "phase_peaks_gib": phases,
        "plan_terms_gib": {k: v / 2**30 for k, v in plan.peak.terms().items()},
    }


def opt13b_throughput():
    """Each GPU_CHECK_CONFIGS entry ``impl:precision`` (precision bf16 | fp8-<recipe>), one
    after another in this process; default: the local spec in BF16."""
    configs = os.environ.get("GPU_CHECK_CONFIGS", "local:bf16").split(",")
    flavor = os.environ.get("GPU_CHECK_FLAVOR", "opt-1.3b")
    for entry in configs:
        impl, _, precision = entry.partition(":")
        recipe = precision.removeprefix("fp8-") if precision.startswith("fp8") else None
        key = f"{flavor}_{impl}_{precision}".replace("-", "_").replace(".", "_")
        try:
            record(key, _opt_throughput(impl, recipe))
        except Exception:  # noqa: BLE001 - report and go on to the next configuration
            record(key + "_error", traceback.format_exc()[-2000:])
        # Free this configuration's model and optimizer before the next one (peak memory of a
        # later entry is still an upper bound: Megatron's global buffers stay).
        gc.collect()
        torch.cuda.empty_cache()


def main():
    _init()
    checks = [] if os.environ.get("GPU_CHECK_ONLY_THROUGHPUT") else [debug_losses, te_available]
    if uses_cuda() or os.environ.get("GPU_CHECK_FLAVOR"):
        checks.append(opt13b_throughput)
    for fn in checks:
        check(fn)
    save_results("gpu_check.json")


if __name__ == "__main__":
    main()
