"""Measure what the planner predicts, on a live Megatron-Core model: bytes of parameters,
gradient buffers and optimizer states (tensor storages), and bytes saved for the backward.

On CPU there is no caching-allocator peak to read; the storage counts are exact, and
:func:`record_peak` reads the peak of the bytes the CPU allocator holds (net of what it held
before) from ``torch.profiler``'s allocation events, which covers transients such as the
backward's working set. On a GPU, ``torch.cuda.max_memory_allocated`` is the end-to-end check.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from megatron_optiml.planning.layout import PlanInput


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def unique_storage_bytes(
    tensors: Iterable[torch.Tensor], exclude: set[int] | frozenset[int] = frozenset()
) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views count once), skipping
    storages whose data pointer is in ``exclude``."""
    seen: dict[int, int] = {}
    for t in tensors:
        ptr, nbytes = _storage_key(t)
        if ptr not in exclude and nbytes:
            seen[ptr] = max(seen.get(ptr, 0), nbytes)
    return sum(seen.values())


def _optimizer_tensors(optimizer: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(main params, state tensors) of a Megatron optimizer (chained or not)."""
    inner = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    params, states = [], []
    for opt in inner:
        torch_opt = getattr(opt, "optimizer", opt)
        for group in torch_opt.param_groups:
            params.extend(group["params"])
        for state in torch_opt.state.values():
            states.extend(v for v in state.values() if torch.is_tensor(v) and v.numel() > 1)
    return params, states


@dataclass(frozen=True, kw_only=True)
class MeasuredStates:
    """Bytes of model state on this rank."""

    weights: int
    grads: int
    optimizer: int


def measure_state_bytes(model: torch.nn.Module, ddp_buffers: Iterable[Any], optimizer: Any):
    """Weights (parameter storages), grads (DDP ``grad_data`` buffers) and optimizer states
    (fp32 main params that are not the weights themselves, plus Adam's moments)."""
    params = list(model.parameters())
    weights = unique_storage_bytes(params)
    weight_ptrs = {_storage_key(p)[0] for p in params}
    grads = unique_storage_bytes(b.grad_data for b in ddp_buffers)
    main_params, states = _optimizer_tensors(optimizer)
    optimizer_bytes = unique_storage_bytes(main_params + states, exclude=weight_ptrs)
    return MeasuredStates(weights=weights, grads=grads, optimizer=optimizer_bytes)


@dataclass
class SavedTensorLog:
    """Tensors saved for the backward during a forward (filled by :func:`record_saved`)."""

    exclude: set[int] = field(default_factory=set)
    refs: list[weakref.ref] = field(default_factory=list)

    def alive(self) -> list[torch.Tensor]:
        return [t for t in (r() for r in self.refs) if t is not None]

    @property
    def nbytes(self) -> int:
        """Bytes of the distinct storages still held by the autograd graph.

        Only live tensors count: a sub-graph built and dropped inside the forward (Megatron
        runs bias-dropout-add under ``torch.enable_grad`` even inside a no-grad recompute
        checkpoint) saves tensors that are freed again. Live storages cannot be reused, so
        de-duplicating them by data pointer is exact.
        """
        return unique_storage_bytes(self.alive(), exclude=self.exclude)


@contextmanager
def record_saved(exclude: Iterable[torch.Tensor] = ()):
    """Log what autograd saves inside the block, minus ``exclude``'s storages (pass the
    parameters: weights saved by linears are not activations)."""
    log = SavedTensorLog(exclude={_storage_key(t)[0] for t in exclude})

    def pack(t: torch.Tensor) -> torch.Tensor:
        log.refs.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield log


@dataclass
class PeakLog:
    """Peak of the bytes allocated inside a :func:`record_peak` block (filled on exit)."""

    peak: int = 0
    """Highest running total of allocations minus frees inside the block."""
    end: int = 0
    """What the block left allocated."""


def _allocation_events(prof: Any) -> list[Any]:
    kind = torch._C._profiler._EventType.Allocation
    out, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == kind:
            out.append(node)
        stack.extend(node.children)
    return sorted(out, key=lambda n: n.start_time_ns)


@contextmanager
def record_peak():
    """Peak CPU bytes held inside the block, above what was held when it began.

    ``torch.profiler(profile_memory=True)`` makes the CPU allocator report every allocation
    and free with its running total (tensors allocated before the block are not counted, nor
    are their frees): the maximum of that total is the peak of live tensor bytes the block
    added, transients included (what ``max_memory_allocated`` measures on a GPU, without the
    caching allocator's rounding).
    """
    from torch.profiler import ProfilerActivity, profile

    log = PeakLog()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield log
    events = _allocation_events(prof)
    if events:
        # The reporter's running total is process-wide and outlives a profiling session
        # (blocks allocated under an earlier one are still counted): start from the first event.
        first = events[0].extra_fields
        base = first.total_allocated - first.alloc_size
        totals = [e.extra_fields.total_allocated - base for e in events]
        log.peak, log.end = max(totals), totals[-1]


@dataclass(frozen=True, kw_only=True)
class TinyRunMeasurement:
    states: MeasuredStates
    saved_activation_bytes: int
    num_parameters: int
    peak_bytes: int | None = None
    """Peak of the bytes one micro-batch's forward + backward added on top of the model
    states (``measure_peak=True``): stored activations plus the backward's working set."""


def tiny_run_plan_input(
    arch: Any,
    *,
    seq_length: int,
    micro_batch_size: int,
    recompute: str = "none",
    hidden_dropout: float = 0.1,
    use_distributed_optimizer: bool = False,
    data_parallel: int = 1,
) -> PlanInput:
    """The planner's description of a :func:`measure_tiny_run` on ``data_parallel`` ranks:
    local spec (unfused attention, what runs on CPU), BF16, attention dropout 0."""
    return PlanInput(
        arch=arch,
        micro_batch_size=micro_batch_size,
        global_batch_size=micro_batch_size * data_parallel,
        seq_length=seq_length,
        transformer_impl="local",
        recompute=recompute,
        hidden_dropout=hidden_dropout,
        use_distributed_optimizer=use_distributed_optimizer,
    )


def gpu_step_plan_input(
    arch: Any,
    *,
    micro_batch_size: int,
    microbatches: int,
    seq_length: int,
    transformer_impl: str = "local",
    fp8: bool = False,
) -> PlanInput:
    """The planner's description of ``benchmarks/gpu_check.py``'s timed step on one GPU: BF16
    (FP8 GEMMs with ``fp8``), distributed optimizer, selective recompute, hidden and attention
    dropout 0.1."""
    return PlanInput(
        arch=arch,
        global_batch_size=micro_batch_size * microbatches,
        micro_batch_size=micro_batch_size,
        seq_length=seq_length,
        precision="fp8" if fp8 else "bf16",
        use_distributed_optimizer=True,
        recompute="selective",
        transformer_impl=transformer_impl,
        hidden_dropout=0.1,
        attention_dropout=0.1,
    )


def measure_tiny_run(
    arch: Any,
    *,
    seq_length: int,
    micro_batch_size: int,
    bf16: bool = True,
    use_distributed_optimizer: bool = False,
    hidden_dropout: float = 0.1,
    attention_dropout: float = 0.0,
    recompute: str = "none",
    seed: int = 1234,
    measure_peak: bool = False,
) -> TinyRunMeasurement:
    """One forward/backward/Adam step of ``arch`` (local spec, tp=pp=1) on this rank.

    Initialises torch.distributed + Megatron's groups from the environment when they are not
    yet up (a single in-process rank needs WORLD_SIZE=1 RANK=0 MASTER_PORT=<free port>) and
    tears down what it started.
    """
    from megatron.core import parallel_state as ps

    from megatron_optiml.config.one_step import one_step_run_config
    from megatron_optiml.parallel import destroy_distributed, init_distributed
    from megatron_optiml.training.build import build_model, build_optimizer

    started = not ps.model_parallel_is_initialized()
    if started:
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("RANK", "0")
        init_distributed(seed=seed)
    try:
        # Local spec, tp = pp = 1, one micro-batch, built as the trainer builds it.
        cfg = one_step_run_config(
            lr=1e-4,
            precision="bf16" if bf16 else "32",
            seq_length=seq_length,
            use_distributed_optimizer=use_distributed_optimizer,
            micro_batch_size=micro_batch_size,
            global_batch_size=micro_batch_size,
            seed=seed,
            hidden_dropout=hidden_dropout,
            attention_dropout=attention_dropout,
            activations_checkpoint_granularity=None if recompute == "none" else recompute,
        )
        # The planner models the local spec's attention as Megatron-Core's unfused one (the
        # score matrix it keeps); the fused SDPA default keeps none of it. BF16: Float16Module
        # casts every parameter (LayerNorms included), as the trainer runs it.
        built = build_model(cfg, arch=arch, core_attention="unfused")
        ddp = built.model[0]
        model = ddp.module
        optimizer, _ = build_optimizer(cfg, built.model)
        g = torch.Generator().manual_seed(seed)
        b, s = micro_batch_size, seq_length
        tokens = torch.randint(3, 1000, (b, s), generator=g)
        labels = torch.randint(3, 1000, (b, s), generator=g)
        positions = torch.arange(s).expand(b, s).contiguous()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        params = list(model.parameters())
        with record_peak() if measure_peak else contextlib.nullcontext() as peak:
            with record_saved(exclude=params) as log:
                loss = ddp(tokens, positions, None, labels=labels)
            saved = log.nbytes
            del log
            loss.float().sum().backward()
            del loss
        ddp.finish_grad_sync()
        optimizer.step()  # Adam allocates its moments on the first step
        states = measure_state_bytes(model, ddp.buffers + ddp.expert_parallel_buffers, optimizer)
        return TinyRunMeasurement(
            states=states,
            saved_activation_bytes=saved,
            num_parameters=sum(p.numel() for p in params),
            peak_bytes=peak.peak if measure_peak else None,
        )
    finally:
        if started:
            destroy_distributed()


def tiny_run_worker(rank: int, world_size: int, arch: Any, kwargs: dict[str, Any]):
    """:func:`measure_tiny_run` on one of ``world_size`` data-parallel gloo ranks (for
    ``megatron_optiml.testing.distributed.run_distributed``)."""
    return measure_tiny_run(arch, **kwargs)
