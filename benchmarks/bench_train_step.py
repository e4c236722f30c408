"""Training-step time on CPU: our Megatron-Core OPT stack vs HF ``transformers`` OPTForCausalLM.

Both models get the same canonical random weights (so their losses agree, which is checked),
the same batch, fp32, dropout 0, causal attention, loss over all target tokens, torch's fused
AdamW with the same hyper-parameters and weight-decay groups, and gradient clipping at 1.0 on
both sides. Fused AdamW is HF Trainer's default optimizer with torch >= 2.8
(``adamw_torch_fused``); ours is Megatron-Core's torch-Adam fallback (no Apex/TE), which
``training/build.py`` switches to the fused kernel. ``--hf-adam-loop`` gives HF torch's
per-tensor AdamW instead (the peer as this benchmark ran before 2026-12-01, evening).

One step = zero grads + forward + backward (each micro-batch) + optimizer step:

- ours: the local spec (core attention: torch SDPA by default, ``--core-attention unfused``
  for Megatron-Core's score-matrix ``DotProductAttention``), Megatron-Core
  ``DistributedDataParallel`` (world of one rank, gloo), the
  no-pipelining ``get_forward_backward_func`` schedule with our ``forward_step``, and
  ``get_megatron_optimizer``'s step (grad norm, clipping, AdamW) -- what ``Trainer._train_step``
  runs. ``attention_mask=None`` so Megatron builds its own causal mask; ``--packed`` adds a row
  with the packed block-diagonal mask of ``collate_packed`` (four documents per row).
- HF: ``OPTForCausalLM`` (default attention implementation, sdpa), ``labels=`` loss,
  ``clip_grad_norm_``, ``torch.optim.AdamW(fused=True)``.

Our CPU backend shim (``megatron_optiml.backend.cpu``) keeps a TorchFunctionMode entered for
the whole process; HF's steps run with that mode popped, as HF would run on its own.
``--hf-under-shim`` adds an HF column timed with the mode left on, which measures what the shim
costs per step.

The CPU is usually shared with other jobs, so our step and HF's step alternate in one process
(order flipped every repetition) and the medians are compared: both see the same load.
Gradient-accumulation and packed-mask rows run at the first ``--threads`` value only.

Memory (``--memory``, on by default): after the timed steps, one more step per side under the
profiler's allocator log; peak = bytes of that side's states held before the step (weights,
grads or Megatron's grad buffer, Adam moments: unique storages) + the highest running total the
step added on top (activations, grads, transients). HF's grads are freed (``set_to_none``)
before its step, so each side counts its gradients once. Printed as MiB and ours/HF.

opt-125m at the issue's shape (12 x 768, 2 x 512 tokens), one invocation, both ratios, at
every-token batches and at the bundled OPT-IML sample's target share (4.5%)::

    .venv/bin/python benchmarks/bench_train_step.py --shapes opt-125m --micro-batch 2 \
        --seq 512 --threads 1,2 --accum 1 --warmup 2 --steps 7 --target-fractions 1,0.045

Result (2026-12-01 evening, 2 cores with nothing else running, load 1.1-4.2; both sides on
torch's fused AdamW): targets 0.045: ours/HF 0.77 (1 thread), 0.75 (2 threads), memory 1.02;
targets 1: 1.00 / 1.00, memory 1.10 (docs/training.md). The afternoon before, both on torch's
per-tensor Adam loop and Megatron's clipping copy: 0.80 / 0.82 and 1.04 / 1.00.

Result (2026-11-26, before the SDPA core attention, i.e. ours = unfused; 2 shared cores, load
average 3-23 from other jobs; mbs 4 x seq 512):
opt-debug ours/HF = 0.68-0.79 (ours faster: Megatron's vocab-parallel cross entropy costs
~250 ms vs ~640 ms for HF's log_softmax + NLL + zero-filled grad at 50,272 x 2,048); 4 layers x
hidden 256: 0.90-1.09 (the vocab GEMMs are equal; ours loses ~0.5 s in the local spec's unfused
attention -- baddbmm/bmm, masked_fill, softmax fwd/bwd, layout copies -- vs HF's SDPA flash
kernel, and wins it back in the loss).

    .venv/bin/python benchmarks/bench_train_step.py [--shapes opt-debug,l4-h256] [--threads 1,2]
        [--micro-batch 4] [--seq 512] [--accum 1,4] [--warmup 3] [--steps 10] [--packed opt-debug]
        [--core-attention sdpa|unfused] [--no-memory] [--hf-under-shim] [--profile]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass

import torch

from megatron_optiml.models.opt.flavors import OPTArch, get_flavor

SHAPES = {
    "opt-debug": get_flavor("opt-debug"),
    # opt-debug's step is mostly the 50,272-row vocabulary projection; this one has real layers.
    "l4-h256": OPTArch(num_layers=4, hidden_size=256, num_attention_heads=8, ffn_hidden_size=1024),
    # The smallest published OPT Megatron's GPT block expresses (12 x 768, 12 heads).
    "opt-125m": get_flavor("opt-125m"),
}
LR, BETAS, EPS, WEIGHT_DECAY, CLIP = 1e-4, (0.9, 0.95), 1e-8, 0.01, 1.0


@dataclass
class Pair:
    """Both models of one shape, ready to step."""

    name: str
    arch: OPTArch
    ours: object  # DistributedDataParallel
    ours_opt: object  # MegatronOptimizer
    hf: torch.nn.Module
    hf_opt: torch.optim.Optimizer


def init_one_rank() -> None:
    from megatron_optiml.parallel import init_distributed
    from megatron_optiml.testing.distributed import free_port

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    init_distributed(seed=1234)


def ours_config():
    """Our side as a run config (fp32, dropout 0, Adam at a constant LR, clip 1.0): built by
    ``training/build.py``, the trainer's own path."""
    from megatron_optiml.config.one_step import one_step_run_config

    return one_step_run_config(
        lr=LR,
        gradient_clip_val=CLIP,
        adam={"weight_decay": WEIGHT_DECAY, "betas": BETAS, "eps": EPS},
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def build_pair(
    name: str,
    arch: OPTArch,
    seed: int = 0,
    core_attention: str = "sdpa",
    hf_adam_fused: bool = True,
) -> Pair:
    from transformers import OPTConfig, OPTForCausalLM

    from megatron_optiml.conversion.opt_hf import canonical_group_to_hf, hf_config_from_arch
    from megatron_optiml.conversion.sharding import Layout, load_shard_into_model, shard_state_dict
    from megatron_optiml.models.opt.init import random_canonical_state_dict
    from megatron_optiml.training.build import build_model, build_optimizer, torch_adams

    full = random_canonical_state_dict(arch, seed=seed)
    cfg = ours_config()
    built = build_model(
        cfg,
        arch=arch,
        core_attention=core_attention,
        load_weights=lambda chunks: load_shard_into_model(
            chunks[0], shard_state_dict(full, Layout(), arch.num_layers)
        ),
    )
    ddp = built.model[0]
    ours_opt, _ = build_optimizer(cfg, built.model)
    if not all(g.get("fused") for a in torch_adams(ours_opt) for g in a.param_groups):
        raise RuntimeError("our optimizer is not on torch's fused Adam")

    fields = hf_config_from_arch(arch, arch.vocab_size, torch.float32)
    fields.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)
    hf = OPTForCausalLM(OPTConfig(**fields))
    hf_sd = canonical_group_to_hf(full, arch, arch.vocab_size)
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise RuntimeError(f"HF weights: missing {missing}, unexpected {unexpected}")
    if hf.lm_head.weight.data_ptr() != hf.model.decoder.embed_tokens.weight.data_ptr():
        raise RuntimeError("HF lm_head is not tied to embed_tokens")
    hf.train()
    # Megatron's default groups: no weight decay on biases and LayerNorm (1-D) parameters.
    params = list(hf.parameters())
    hf_opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=LR,
        betas=BETAS,
        eps=EPS,
        fused=hf_adam_fused,
    )
    return Pair(name, arch, ddp, ours_opt, hf, hf_opt)


@torch.no_grad()
def check_same_loss(pair: Pair, mb: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Loss of both models on one micro-batch before any step: they must compute the same."""
    per_token = pair.ours.module(
        mb["tokens"], mb["position_ids"], None, labels=mb["labels"], loss_mask=mb["loss_mask"]
    )
    ours = float((per_token * mb["loss_mask"]).sum() / mb["loss_mask"].sum())
    with without_shim():
        hf = float(pair.hf(input_ids=mb["tokens"], labels=mb["hf_labels"]).loss)
    if abs(ours - hf) > 1e-4 * abs(hf):
        raise RuntimeError(f"{pair.name}: initial losses differ: ours {ours}, HF {hf}")
    return ours, hf


def make_micro_batches(
    arch: OPTArch,
    n: int,
    mbs: int,
    seq: int,
    packed: bool,
    seed: int = 0,
    target_fraction: float = 1.0,
) -> list[dict[str, torch.Tensor]]:
    """``n`` micro-batches of ``mbs x seq`` tokens. Labels are the next tokens; the last
    position's loss is masked in ours so both sides average the same ``seq - 1`` targets.

    ``target_fraction < 1`` makes instruction-tuning rows: four examples per row, the last
    ``target_fraction`` of each example's tokens are its target (the loss mask), the rest its
    prompt; HF gets the same targets as ``labels`` with -100 on the prompt tokens."""
    from megatron_optiml.data.collate import block_causal_mask

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        stream = torch.randint(3, arch.vocab_size - 7, (mbs, seq + 1), generator=g)
        loss_mask = torch.ones(mbs, seq)
        if target_fraction < 1.0:
            loss_mask.zero_()
            for row in range(mbs):
                cuts = sorted(torch.randint(seq // 8, seq - seq // 8, (3,), generator=g).tolist())
                for lo, hi in zip([0, *cuts], [*cuts, seq]):
                    loss_mask[row, hi - max(1, round(target_fraction * (hi - lo))) : hi] = 1.0
        loss_mask[:, -1] = 0.0
        tokens = stream[:, :-1].contiguous()
        # HF's loss at position t scores labels[t + 1]: ours scores position t when loss_mask[t].
        hf_labels = torch.full_like(tokens, -100)
        hf_labels[:, 1:] = torch.where(loss_mask[:, :-1].bool(), tokens[:, 1:], -100)
        mb = {
            "tokens": tokens,
            "labels": stream[:, 1:].contiguous(),
            "loss_mask": loss_mask,
            "position_ids": torch.arange(seq).expand(mbs, seq).contiguous(),
            "hf_labels": hf_labels,
        }
        if packed:
            # Four documents per row at random boundaries (positions are not reset: same work).
            cuts = torch.sort(torch.randint(1, seq, (mbs, 3), generator=g), dim=1).values
            segment_ids = (torch.arange(seq).view(1, 1, seq) >= cuts.unsqueeze(-1)).sum(1)
            mb["attention_mask"] = block_causal_mask(segment_ids)
        out.append(mb)
    return out


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The OPTModel inside DDP / Float16Module."""
    while not hasattr(module, "loss_tokens_only"):
        module = module.module
    return module


def ours_step(pair: Pair, micro_batches: list[dict[str, torch.Tensor]]) -> float:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_optiml.training.step import forward_step, reduce_loss_reports

    pair.ours.zero_grad_buffer()
    pair.ours_opt.zero_grad()
    reports = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(micro_batches),
        model=[pair.ours],
        num_microbatches=len(micro_batches),
        seq_length=micro_batches[0]["tokens"].shape[1],
        micro_batch_size=micro_batches[0]["tokens"].shape[0],
        forward_only=False,
    )
    ok, _, _ = pair.ours_opt.step()
    if not ok:
        raise RuntimeError("Megatron optimizer skipped the step")
    loss_sum, tokens = reduce_loss_reports(reports).tolist()
    return loss_sum / tokens


def hf_step(pair: Pair, micro_batches: list[dict[str, torch.Tensor]]) -> float:
    pair.hf_opt.zero_grad(set_to_none=True)
    total = 0.0
    for mb in micro_batches:
        # HF shifts labels itself: the same targets as ours' loss mask (make_micro_batches).
        loss = pair.hf(input_ids=mb["tokens"], labels=mb["hf_labels"]).loss / len(micro_batches)
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(pair.hf.parameters(), CLIP)
    pair.hf_opt.step()
    return total


def without_shim():
    """Pop our CPU shim's TorchFunctionMode (if on the stack) for the duration."""
    if torch.overrides._get_current_function_mode_stack():
        return torch.overrides._pop_mode_temporarily()
    return contextlib.nullcontext()


def timed(fn, *args) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = fn(*args)
    return time.perf_counter() - t0, loss


def measure(
    pair: Pair,
    micro_batches,
    warmup: int,
    steps: int,
    hf_under_shim: bool,
) -> dict:
    def run_hf():
        with without_shim():
            return timed(hf_step, pair, micro_batches)

    runners = {"ours": lambda: timed(ours_step, pair, micro_batches), "hf": run_hf}
    if hf_under_shim:
        runners["hf_shim"] = lambda: timed(hf_step, pair, micro_batches)
    times = {k: [] for k in runners}
    losses = {k: [] for k in runners}
    for i in range(warmup + steps):
        order = list(runners) if i % 2 == 0 else list(reversed(runners))
        for k in order:
            dt, loss = runners[k]()
            losses[k].append(loss)
            if i >= warmup:
                times[k].append(dt)
    return {"times": times, "losses": losses}


def _storages_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _state_tensors(module: torch.nn.Module, optimizer) -> list:
    out = []
    for p in module.parameters():
        out += [p, p.grad, getattr(p, "main_grad", None)]
    inner = getattr(optimizer, "optimizer", optimizer)  # MegatronOptimizer wraps torch's
    for state in inner.state.values():
        out += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return out


def measure_memory(pair: Pair, micro_batches) -> dict:
    """Peak tensor bytes of one training step per side: held states + what the step adds."""
    from megatron_optiml.planning.measure import record_peak

    ours_held = _storages_bytes(_state_tensors(pair.ours, pair.ours_opt))
    with record_peak() as ours_log:
        ours_step(pair, micro_batches)
    with without_shim():
        pair.hf_opt.zero_grad(set_to_none=True)
        hf_held = _storages_bytes(_state_tensors(pair.hf, pair.hf_opt))
        with record_peak() as hf_log:
            hf_step(pair, micro_batches)
    mib = 2.0**20
    ours, hf = (ours_held + ours_log.peak) / mib, (hf_held + hf_log.peak) / mib
    return {
        "ours_peak_mib": ours,
        "hf_peak_mib": hf,
        "mem_ratio": ours / hf,
        "ours_states_mib": ours_held / mib,
        "hf_states_mib": hf_held / mib,
    }


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def profile_ours(pair: Pair, micro_batches, rows: int = 25) -> None:
    from torch.profiler import ProfilerActivity, profile

    ours_step(pair, micro_batches)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours_step(pair, micro_batches)
    print(f"\n### profile: ours, {pair.name}, threads={torch.get_num_threads()}\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    with without_shim(), profile(activities=[ProfilerActivity.CPU]) as prof:
        hf_step(pair, micro_batches)
    print(f"\n### profile: HF, {pair.name}, threads={torch.get_num_threads()}\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="opt-debug,l4-h256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--accum", default="1,4", help="micro-batches per step (grad accumulation)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument(
        "--accum-steps", type=int, default=None, help="measured steps for accum > 1 rows"
    )
    ap.add_argument(
        "--packed", default="", help="shapes (comma list) to add a packed block-mask row for"
    )
    ap.add_argument(
        "--target-fractions",
        default="1",
        help="comma list: share of each row's tokens that are targets (1 = every token); each"
        " value below 1 adds a row of instruction-shaped examples (prompt, then target)",
    )
    ap.add_argument(
        "--all-positions",
        action="store_true",
        help="our output layer on every position (GPTModel's path) instead of loss tokens only",
    )
    ap.add_argument(
        "--core-attention",
        default="sdpa",
        choices=("sdpa", "unfused"),
        help="our local spec's core attention",
    )
    ap.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory step of each row"
    )
    ap.add_argument("--hf-under-shim", action="store_true")
    ap.add_argument(
        "--hf-adam-loop",
        action="store_true",
        help="HF side on torch's per-tensor AdamW loop instead of the fused kernel",
    )
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables, 1st shape")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # Apex/TE fallbacks, etc.

    init_one_rank()
    shapes = args.shapes.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    accums = [int(a) for a in args.accum.split(",")]
    pairs = {
        name: build_pair(
            name,
            SHAPES[name],
            core_attention=args.core_attention,
            hf_adam_fused=not args.hf_adam_loop,
        )
        for name in shapes
    }
    fractions = [float(f) for f in args.target_fractions.split(",")]
    for name, pair in pairs.items():
        unwrap(pair.ours).loss_tokens_only = not args.all_positions
        for f in fractions:
            mb = make_micro_batches(
                pair.arch, 1, args.micro_batch, args.seq, False, seed=1, target_fraction=f
            )[0]
            ours, hf = check_same_loss(pair, mb)
            print(
                f"{name}: initial loss at target fraction {f:g}: ours {ours:.6f}, HF {hf:.6f}"
                " (same weights)",
                flush=True,
            )

    rows, loads = [], [load_average()]
    for name in shapes:
        pair = pairs[name]
        full = 1.0 if 1.0 in fractions else fractions[0]
        variants = [(a, False, full) for a in accums]
        if name in args.packed.split(","):
            variants.append((1, True, full))
        variants += [(1, False, f) for f in fractions if f != full]
        for a, packed, frac in variants:
            mbs = make_micro_batches(
                pair.arch, a, args.micro_batch, args.seq, packed, target_fraction=frac
            )
            targets = int(sum(float(mb["loss_mask"].sum()) for mb in mbs))
            # Accumulation and packed-mask rows at the first thread count only (time budget).
            for t in threads if (a == 1 and not packed) else threads[:1]:
                torch.set_num_threads(t)
                steps = args.steps if a == 1 else (args.accum_steps or args.steps)
                t0 = time.perf_counter()
                r = measure(pair, mbs, args.warmup, steps, args.hf_under_shim)
                med = {k: statistics.median(v) for k, v in r["times"].items()}
                tokens = a * args.micro_batch * args.seq
                row = {
                    "shape": name,
                    "attention": "packed block mask" if packed else "causal",
                    "micro_batches": a,
                    "threads": t,
                    "tokens_per_step": tokens,
                    "target_fraction": frac,
                    "targets_per_step": targets,
                    "ours_ms": 1e3 * med["ours"],
                    "hf_ms": 1e3 * med["hf"],
                    "ratio": med["ours"] / med["hf"],
                    "ours_tok_s": tokens / med["ours"],
                    "hf_tok_s": tokens / med["hf"],
                    "first_loss": {k: v[0] for k, v in r["losses"].items()},
                    "times_ms": {k: [1e3 * x for x in v] for k, v in r["times"].items()},
                    "load_after": load_average(),
                }
                if "hf_shim" in med:
                    row["hf_shim_ms"] = 1e3 * med["hf_shim"]
                if not args.no_memory and t == threads[0]:
                    row.update(measure_memory(pair, mbs))
                rows.append(row)
                loads.append(row["load_after"])
                mem = (
                    f" peak ours {row['ours_peak_mib']:.0f} MiB, HF {row['hf_peak_mib']:.0f} MiB,"
                    f" ratio {row['mem_ratio']:.2f};"
                    if "mem_ratio" in row
                    else ""
                )
                print(
                    f"{name} {row['attention']} targets {frac:g} x{a} threads={t}: ours {row['ours_ms']:.0f} ms,"
                    f" HF {row['hf_ms']:.0f} ms, ratio {row['ratio']:.2f};{mem}"
                    f" load {row['load_after']};"
                    f" {time.perf_counter() - t0:.0f} s",
                    flush=True,
                )

    print(
        f"\nmicro batch {args.micro_batch} x seq {args.seq}, fp32, AdamW"
        f" ({'HF: per-tensor loop' if args.hf_adam_loop else 'fused, both'}) + clip 1.0, our core"
        f" attention {args.core_attention}; medians of"
        f" {args.steps} steps (accum rows: {args.accum_steps or args.steps}) after"
        f" {args.warmup} warm-up, ours/HF alternating; load average (1/5/15 min) during run:"
        f" {', '.join(loads)}\n"
    )
    shim = args.hf_under_shim
    print(
        "| shape | attention | targets | micro-batches | threads | ours ms/step | HF ms/step | ours/HF |"
        " ours tok/s | HF tok/s | ours peak MiB | HF peak MiB | memory ours/HF |"
        + (" HF+shim ms |" if shim else "")
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if shim else ""))
    for r in rows:
        mem = (
            f" {r['ours_peak_mib']:.0f} | {r['hf_peak_mib']:.0f} | {r['mem_ratio']:.2f} |"
            if "mem_ratio" in r
            else " | | |"
        )
        print(
            f"| {r['shape']} | {r['attention']} | {r['target_fraction']:g} | {r['micro_batches']} | {r['threads']} |"
            f" {r['ours_ms']:.0f} | {r['hf_ms']:.0f} | {r['ratio']:.2f} |"
            f" {r['ours_tok_s']:.0f} | {r['hf_tok_s']:.0f} |{mem}"
            + (f" {r['hf_shim_ms']:.0f} |" if shim else "")
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "load": loads}, f, indent=1)
    if args.profile:
        torch.set_num_threads(threads[0])
        pair = pairs[shapes[0]]
        profile_ours(pair, make_micro_batches(pair.arch, 1, args.micro_batch, args.seq, False))


if __name__ == "__main__":
    main()
