"""The run layout the planner sizes (model, parallelism, batch, precision) and its refusals: the
run config's layout rules (``megatron_optiml.parallel.layout``) plus the planner's own fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_optiml.config.precision import PRECISIONS, REASON, PrecisionError, canonical_precision
from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.parallel.layout import Labels, LayoutError, ParallelLayout, check_layout
from megatron_optiml.planning.hardware import ClusterSpec

RECOMPUTE = ("none", "selective", "full")
TRANSFORMER_IMPLS = ("transformer_engine", "local")
# The planner's field names inside reasons (the run config says TP, PP, ...).
_LABELS = Labels(tp="tp", pp="pp", vp="vp", dp="dp", devices="gpus_per_node")


class PlanError(ValueError):
    """A layout that cannot run, naming the field and value at fault."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


@dataclass(frozen=True, kw_only=True)
class PlanInput:
    """One training layout of one OPT model; data parallelism is what the cluster leaves."""

    arch: OPTArch
    """Model shape (``megatron_optiml.models.opt.get_flavor``)."""
    global_batch_size: int
    """Sequences per optimizer step, all data-parallel ranks and micro-batches together."""
    tp: int = 1
    """Tensor-parallel size (Megatron ``tensor_model_parallel_size``); kept inside a node."""
    pp: int = 1
    """Pipeline-parallel size (``pipeline_model_parallel_size``)."""
    vp: int | None = None
    """Virtual pipeline chunks per pipeline rank (interleaved 1F1B); None = plain 1F1B."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (shards LayerNorm/dropout activations over TP)."""
    micro_batch_size: int = 1
    """Sequences per micro-batch per data-parallel rank."""
    seq_length: int = 2048
    """Tokens per sequence."""
    precision: str = "bf16"
    """'bf16' | 'fp16' | 'fp8' (Transformer Engine GEMMs, bf16 elsewhere) | 'fp32'; the run
    config's spellings ('32', 'bf16-mixed', ...; config/precision.py) are kept canonical."""
    use_distributed_optimizer: bool = True
    """Shard fp32 master weights and Adam moments over data parallelism (ZeRO-1)."""
    grad_reduce_in_fp32: bool = True
    """fp32 main-gradient buffer (Megatron ``grad_reduce_in_fp32``); False keeps 16-bit grads."""
    recompute: str = "selective"
    """'none' | 'selective' (core attention) | 'full' (every layer, uniform, 1 layer a chunk)."""
    transformer_impl: str = "transformer_engine"
    """'transformer_engine' (fused/flash attention: no s^2 activations) | 'local' (unfused)."""
    hidden_dropout: float = 0.1
    """Dropout after attention/MLP and on embeddings (OPT-IML: 0.1); > 0 stores 1-byte masks."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities (OPT: 0.0)."""
    mfu: float = 0.4
    """Assumed fraction of the GPU's dense peak the kernels sustain while busy, applied to the
    FLOPs actually executed (recompute included, pipeline bubble excluded)."""
    fixed_overhead_gib: float = 2.0
    """Per-GPU memory outside the model: CUDA context, NCCL communicators, cuBLAS/TE
    workspaces, GiB."""
    fragmentation: float = 0.10
    """Caching-allocator fragmentation, as a fraction of the activation bytes (weights, grads
    and optimizer states sit in Megatron's contiguous buffers)."""
    extra: dict[str, object] = field(default_factory=dict)
    """Free-form provenance (recipe path, flavor name) echoed in the report."""

    def __post_init__(self) -> None:
        # One vocabulary: an accepted spelling is stored canonical; validate() refuses the rest.
        try:
            object.__setattr__(self, "precision", canonical_precision(self.precision))
        except PrecisionError:
            pass

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp

    def layout(self, cluster: ClusterSpec) -> ParallelLayout:
        """This layout on ``cluster``, for the shared rules and sizes."""
        return ParallelLayout(
            tp=self.tp,
            pp=self.pp,
            vp=self.vp,
            sequence_parallel=self.sequence_parallel,
            micro_batch_size=self.micro_batch_size,
            global_batch_size=self.global_batch_size,
            seq_length=self.seq_length,
            num_nodes=cluster.num_nodes,
            devices_per_node=cluster.gpus_per_node,
        )

    def data_parallel_size(self, cluster: ClusterSpec) -> int:
        return self.layout(cluster).data_parallel_size

    def num_microbatches(self, cluster: ClusterSpec) -> int:
        return self.layout(cluster).num_microbatches

    def validate(self, cluster: ClusterSpec) -> None:
        """Raise :class:`PlanError` for a layout Megatron-Core cannot run on ``cluster``: the
        run config's layout rules (megatron_optiml/parallel/layout.py) plus the planner's own
        fields (precision, recompute, spec, MFU, FP8 on this GPU)."""
        if self.precision not in PRECISIONS:
            raise PlanError("precision", self.precision, REASON)
        if self.recompute not in RECOMPUTE:
            raise PlanError("recompute", self.recompute, f"expected one of {RECOMPUTE}")
        if self.transformer_impl not in TRANSFORMER_IMPLS:
            raise PlanError(
                "transformer_impl", self.transformer_impl, f"expected one of {TRANSFORMER_IMPLS}"
            )
        if not 0.0 < self.mfu <= 1.0:
            raise PlanError("mfu", self.mfu, "must be in (0, 1]")
        fields = {
            "tp": ("tp", self.tp),
            "pp": ("pp", self.pp),
            "vp": ("vp", self.vp),
            "sequence_parallel": ("sequence_parallel", self.sequence_parallel),
            "micro_batch_size": ("micro_batch_size", self.micro_batch_size),
            "global_batch_size": ("global_batch_size", self.global_batch_size),
            "seq_length": ("seq_length", self.seq_length),
            "world": ("tp x pp", self.model_parallel_size),
        }
        try:
            check_layout(
                self.layout(cluster),
                self.arch,
                model=str(self.extra.get("flavor", "the model")),
                labels=_LABELS,
            )
        except LayoutError as e:
            field, value = fields[e.role]
            raise PlanError(field, value, e.reason) from None
        if self.precision == "fp8" and cluster.gpu.peak_fp8_tflops is None:
            raise PlanError("precision", "fp8", f"gpu={cluster.gpu.name!r} has no FP8 tensor cores")
