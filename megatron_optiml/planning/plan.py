"""Pre-flight plan of a run: per-GPU memory, fit, pipeline bubble, step time and throughput."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.planning.flops import StepFlops, step_flops
from megatron_optiml.planning.hardware import ClusterSpec
from megatron_optiml.planning.layout import RECOMPUTE, PlanError, PlanInput
from megatron_optiml.planning.memory import (
    GIB,
    StageParams,
    stage_activation_terms,
    stage_params,
    state_bytes_per_param,
)


@dataclass(frozen=True, kw_only=True)
class StageMemory:
    """Peak bytes on one GPU of one pipeline stage."""

    stage: str
    params: StageParams
    weights: float
    grads: float
    optimizer: float
    activations: float
    fragmentation: float
    overhead: float
    activation_terms: dict[str, float] = field(default_factory=dict)

    @property
    def model_states(self) -> float:
        return self.weights + self.grads + self.optimizer

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.fragmentation + self.overhead

    def terms(self) -> dict[str, float]:
        return {
            "weights": self.weights,
            "gradients": self.grads,
            "optimizer states": self.optimizer,
            "activations": self.activations,
            "allocator fragmentation": self.fragmentation,
            "CUDA/NCCL overhead": self.overhead,
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The planner's verdict on one layout."""

    inp: PlanInput
    cluster: ClusterSpec
    dp: int
    num_microbatches: int
    stages: tuple[StageMemory, ...]
    """First stage, and the last one when pp > 1."""
    flops: StepFlops
    bubble: float
    """Pipeline bubble as a fraction of the ideal compute time: (p-1)/(v*m)."""
    compute_s: float
    """Step compute time without the bubble: executed FLOPs / (GPUs x peak x mfu)."""
    step_s: float
    """compute_s x (1 + bubble); DP gradient reduction assumed overlapped."""
    dp_comm_s: float | None
    """Data-parallel gradient reduction (+ param all-gather) time if it were not overlapped;
    None without a bandwidth."""
    notes: tuple[str, ...] = ()

    @property
    def peak(self) -> StageMemory:
        return max(self.stages, key=lambda m: m.total)

    @property
    def capacity_bytes(self) -> float:
        return self.cluster.memory_gib * GIB

    @property
    def fits(self) -> bool:
        return self.peak.total <= self.capacity_bytes

    @property
    def tokens_per_s(self) -> float:
        return self.inp.global_batch_size * self.inp.seq_length / self.step_s

    @property
    def model_flops_utilization(self) -> float:
        """Model FLOPs / (step time x GPUs x dense BF16 peak): what the run would report."""
        peak = self.cluster.gpu.peak_bf16_tflops * 1e12
        return self.flops.model / (self.step_s * self.cluster.world_size * peak)

    @property
    def biggest_term(self) -> tuple[str, float]:
        return max(self.peak.terms().items(), key=lambda kv: kv[1])

    def verdict(self) -> str:
        peak = self.peak
        if self.fits:
            return (
                f"fits: {peak.total / GIB:.1f} of {self.cluster.memory_gib:.1f} GiB on the "
                f"{peak.stage} stage"
            )
        name, value = self.biggest_term
        return (
            f"does not fit: {peak.total / GIB:.1f} GiB > {self.cluster.memory_gib:.1f} GiB on "
            f"the {peak.stage} stage; biggest term: {name} {value / GIB:.1f} GiB. "
            + " ".join(self.advice())
        )

    def advice(self) -> list[str]:
        """Concrete changes that shrink the biggest terms, with their effect where computable."""
        inp, peak, out = self.inp, self.peak, []
        if not inp.use_distributed_optimizer and self.dp > 1:
            saved = peak.optimizer * (1 - 1 / self.dp)
            out.append(
                f"Use the distributed optimizer: optimizer states /{self.dp} "
                f"(-{saved / GIB:.1f} GiB)."
            )
        if peak.activations > 0.25 * peak.total:
            if inp.recompute != "full":
                out.append("Recompute more (--recompute full keeps only layer inputs).")
            if inp.tp > 1 and not inp.sequence_parallel:
                out.append("Turn on sequence parallelism (shards the replicated activations).")
            if inp.micro_batch_size > 1:
                out.append("Lower the micro batch size (activations scale with it).")
        if peak.model_states > 0.25 * peak.total:
            out.append("Add pipeline stages (--pp) or tensor parallelism (--tp <= GPUs/node).")
        return out


def make_plan(inp: PlanInput, cluster: ClusterSpec) -> Plan:
    """Plan ``inp`` on ``cluster``; raises :class:`PlanError` for layouts that cannot run."""
    inp.validate(cluster)
    dp = inp.data_parallel_size(cluster)
    m = inp.num_microbatches(cluster)
    per_param = state_bytes_per_param(inp, dp)
    stages = []
    for stage in ("first", "last") if inp.pp > 1 else ("first",):
        params = stage_params(inp.arch, tp=inp.tp, pp=inp.pp, stage=stage)
        weights = params.total * per_param.weights
        if inp.precision == "fp8":
            # Transformer Engine caches each GEMM weight in FP8 and its transpose for the
            # micro-batches of a step: 2 more bytes per GEMM parameter.
            weights += 2 * params.linear
        act_terms = stage_activation_terms(inp, m, stage)
        activations = sum(act_terms.values())
        stages.append(
            StageMemory(
                stage=stage if inp.pp > 1 else "only",
                params=params,
                weights=weights,
                grads=params.total * per_param.grads,
                optimizer=params.total * per_param.optimizer,
                activations=activations,
                fragmentation=inp.fragmentation * activations,
                overhead=inp.fixed_overhead_gib * GIB,
                activation_terms=act_terms,
            )
        )

    flops = step_flops(
        inp.arch,
        global_batch_size=inp.global_batch_size,
        seq_length=inp.seq_length,
        recompute=inp.recompute,
    )
    gemm_peak = cluster.peak_tflops(inp.precision) * 1e12
    # Core attention and the logits stay 16-bit under FP8 (and TF32 under fp32).
    other_peak = cluster.peak_tflops("fp32" if inp.precision == "fp32" else "bf16") * 1e12
    compute_s = (flops.gemm / gemm_peak + flops.other / other_peak) / (cluster.world_size * inp.mfu)
    bubble = (inp.pp - 1) / ((inp.vp or 1) * m)
    step_s = compute_s * (1 + bubble)

    dp_comm_s = None
    bandwidth = (
        cluster.inter_node_bandwidth_gbps
        if cluster.num_nodes > 1
        else cluster.gpu.intra_node_bandwidth_gbps
    )
    if bandwidth and dp > 1:
        first = stages[0]
        ring = (dp - 1) / dp
        if inp.use_distributed_optimizer:
            volume = ring * (first.grads + first.params.total * per_param.weights)
        else:
            volume = 2 * ring * first.grads
        dp_comm_s = volume / (bandwidth * 1e9)

    notes = []
    if inp.recompute == "selective" and inp.transformer_impl == "transformer_engine":
        notes.append(
            "selective recompute saves no memory with fused attention (no s^2 tensors are "
            "stored); it only adds the core-attention forward"
        )
    if inp.tp > 1 and not inp.sequence_parallel:
        notes.append("sequence_parallel is off: LayerNorm/dropout activations are replicated")
    if inp.pp > 1 and m < inp.pp:
        notes.append(f"only {m} micro-batches for pp={inp.pp}: most of the pipeline idles")
    if inp.precision == "fp8":
        notes.append(
            "fp8: GEMMs at the FP8 peak, attention and logits at BF16; activations modelled "
            "as bf16 (TE's saved FP8 copies are not counted)"
        )
    return Plan(
        inp=inp,
        cluster=cluster,
        dp=dp,
        num_microbatches=m,
        stages=tuple(stages),
        flops=flops,
        bubble=bubble,
        compute_s=compute_s,
        step_s=step_s,
        dp_comm_s=dp_comm_s,
        notes=tuple(notes),
    )


def _gib(x: float) -> str:
    return f"{x / GIB:8.2f}"


def format_plan(plan: Plan) -> str:
    """A readable per-GPU memory table plus schedule and throughput lines."""
    inp, c = plan.inp, plan.cluster
    name = inp.extra.get("flavor", f"{inp.arch.num_parameters() / 1e9:.1f}B params")
    lines = [
        f"model {name}: L={inp.arch.num_layers} h={inp.arch.hidden_size} "
        f"heads={inp.arch.num_attention_heads} V={inp.arch.vocab_size}",
        f"cluster: {c.num_nodes} x {c.gpus_per_node} {c.gpu.name} = {c.world_size} GPUs, "
        f"{c.memory_gib:.1f} GiB each",
        f"layout: tp={inp.tp} pp={inp.pp} vp={inp.vp or '-'} dp={plan.dp} "
        f"sp={'on' if inp.sequence_parallel else 'off'} mbs={inp.micro_batch_size} "
        f"gbs={inp.global_batch_size} seq={inp.seq_length} micro-batches={plan.num_microbatches}",
        f"precision={inp.precision} distributed_optimizer={inp.use_distributed_optimizer} "
        f"grad_reduce_in_fp32={inp.grad_reduce_in_fp32} recompute={inp.recompute} "
        f"impl={inp.transformer_impl}",
        "",
        f"{'per-GPU memory (GiB)':<28}" + "".join(f"{m.stage + ' stage':>14}" for m in plan.stages),
        f"{'  parameters (M)':<28}" + "".join(f"{m.params.total / 1e6:14.1f}" for m in plan.stages),
    ]
    for key in plan.stages[0].terms():
        lines.append(
            f"{'  ' + key:<28}" + "".join(f"{_gib(m.terms()[key]):>14}" for m in plan.stages)
        )
    lines.append(f"{'  total':<28}" + "".join(f"{_gib(m.total):>14}" for m in plan.stages))
    lines += [
        "",
        plan.verdict(),
        f"pipeline bubble: {plan.bubble:.1%} of compute ((p-1)/(v*m) = "
        f"({inp.pp}-1)/({inp.vp or 1}*{plan.num_microbatches}))",
        f"FLOPs/step: model {plan.flops.model / 1e15:.1f} PFLOP, executed "
        f"{plan.flops.executed / 1e15:.1f} PFLOP (recompute={inp.recompute})",
        f"est. step time {plan.step_s:.2f} s at mfu={inp.mfu:.2f} of "
        f"{c.peak_tflops(inp.precision):.0f} TFLOP/s/GPU -> {plan.tokens_per_s:,.0f} tokens/s "
        f"({plan.tokens_per_s / c.world_size:,.0f} per GPU), model-FLOPs utilisation vs BF16 "
        f"peak {plan.model_flops_utilization:.1%}",
    ]
    if plan.dp_comm_s is not None:
        lines.append(f"DP gradient reduction if not overlapped: {plan.dp_comm_s:.2f} s/step")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


def suggest_layouts(
    arch: OPTArch,
    cluster: ClusterSpec,
    *,
    global_batch_size: int,
    seq_length: int = 2048,
    precision: str = "bf16",
    use_distributed_optimizer: bool = True,
    mfu: float = 0.4,
    tps: Iterable[int] = (1, 2, 4, 8),
    pps: Iterable[int] | None = None,
    micro_batch_sizes: Iterable[int] = (1, 2, 4, 8),
    recomputes: Iterable[str] = RECOMPUTE,
    vps: Iterable[int | None] = (None,),
    **fields: object,
) -> list[Plan]:
    """Every (tp, pp, vp, micro batch, recompute) that runs and fits, best estimated tokens/s
    first. Sequence parallelism is on whenever tp > 1.

    The step-time model has no communication term and no GEMM-size effect, so ties (same
    bubble and recompute) are broken toward less model parallelism -- smaller tp, then pp --
    and then toward the larger micro batch (better GEMM efficiency on real hardware).
    """
    if pps is None:
        pps = [p for p in range(1, arch.num_layers + 1) if arch.num_layers % p == 0]
    plans = []
    for tp in tps:
        for pp in pps:
            for vp in vps:
                for mbs in micro_batch_sizes:
                    for recompute in recomputes:
                        inp = PlanInput(
                            arch=arch,
                            tp=tp,
                            pp=pp,
                            vp=vp,
                            sequence_parallel=tp > 1,
                            micro_batch_size=mbs,
                            global_batch_size=global_batch_size,
                            seq_length=seq_length,
                            precision=precision,
                            use_distributed_optimizer=use_distributed_optimizer,
                            recompute=recompute,
                            mfu=mfu,
                            **fields,  # type: ignore[arg-type]
                        )
                        try:
                            plan = make_plan(inp, cluster)
                        except PlanError:
                            continue
                        if plan.fits:
                            plans.append(plan)
    return sorted(
        plans,
        key=lambda p: (
            -round(p.tokens_per_s, 3),
            p.inp.tp * p.inp.pp,
            p.inp.tp,
            -p.inp.micro_batch_size,
        ),
    )


def with_changes(inp: PlanInput, **changes: object) -> PlanInput:
    """``inp`` with some fields replaced (for what-if comparisons)."""
    return dataclasses.replace(inp, **changes)  # type: ignore[arg-type]
