"""The run layout the planner sizes (model, parallelism, batch, precision) and its refusals."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.planning.hardware import ClusterSpec

PRECISIONS = ("bf16", "fp16", "fp8", "fp32")
RECOMPUTE = ("none", "selective", "full")
TRANSFORMER_IMPLS = ("transformer_engine", "local")


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
    """'bf16' | 'fp16' | 'fp8' (Transformer Engine GEMMs, bf16 elsewhere) | 'fp32'."""
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

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp

    def data_parallel_size(self, cluster: ClusterSpec) -> int:
        return cluster.world_size // self.model_parallel_size

    def num_microbatches(self, cluster: ClusterSpec) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.data_parallel_size(cluster))

    def validate(self, cluster: ClusterSpec) -> None:
        """Raise :class:`PlanError` for a layout Megatron-Core cannot run on ``cluster``."""
        a = self.arch
        for name in ("tp", "pp", "micro_batch_size", "global_batch_size", "seq_length"):
            if getattr(self, name) < 1:
                raise PlanError(name, getattr(self, name), "must be >= 1")
        if self.precision not in PRECISIONS:
            raise PlanError("precision", self.precision, f"expected one of {PRECISIONS}")
        if self.recompute not in RECOMPUTE:
            raise PlanError("recompute", self.recompute, f"expected one of {RECOMPUTE}")
        if self.transformer_impl not in TRANSFORMER_IMPLS:
            raise PlanError(
                "transformer_impl", self.transformer_impl, f"expected one of {TRANSFORMER_IMPLS}"
            )
        if not 0.0 < self.mfu <= 1.0:
            raise PlanError("mfu", self.mfu, "must be in (0, 1]")
        if self.seq_length > a.max_position_embeddings:
            raise PlanError(
                "seq_length",
                self.seq_length,
                f"OPT has {a.max_position_embeddings} learned positions; longer sequences have "
                "no position embedding",
            )
        if a.num_attention_heads % self.tp:
            raise PlanError(
                "tp", self.tp, f"num_attention_heads={a.num_attention_heads} is not divisible by it"
            )
        if a.ffn_hidden_size % self.tp or a.vocab_size % self.tp:
            raise PlanError(
                "tp",
                self.tp,
                f"ffn_hidden_size={a.ffn_hidden_size} and vocab_size={a.vocab_size} must divide by it",
            )
        if self.tp > cluster.gpus_per_node:
            raise PlanError(
                "tp",
                self.tp,
                f"exceeds gpus_per_node={cluster.gpus_per_node}: tensor parallelism "
                "communicates every layer and must stay on NVLink inside a node",
            )
        if self.sequence_parallel and self.tp == 1:
            raise PlanError("sequence_parallel", True, "needs tp > 1 (it shards over TP ranks)")
        if self.vp is not None:
            if self.vp < 1:
                raise PlanError("vp", self.vp, "must be >= 1 or None")
            if self.pp == 1:
                raise PlanError("vp", self.vp, "the interleaved schedule needs pp > 1")
        chunks = self.pp * (self.vp or 1)
        if a.num_layers % chunks:
            what = "pp" if self.vp is None else "pp x vp"
            raise PlanError(
                "pp" if self.vp is None else "vp",
                self.pp if self.vp is None else self.vp,
                f"num_layers={a.num_layers} is not divisible by {what}={chunks}",
            )
        if cluster.world_size % self.model_parallel_size:
            raise PlanError(
                "tp x pp",
                self.model_parallel_size,
                f"world size {cluster.world_size} ({cluster.num_nodes} nodes x "
                f"{cluster.gpus_per_node} GPUs) is not divisible by it",
            )
        dp = self.data_parallel_size(cluster)
        if self.global_batch_size % (self.micro_batch_size * dp):
            raise PlanError(
                "global_batch_size",
                self.global_batch_size,
                f"not divisible by micro_batch_size x dp = {self.micro_batch_size} x {dp}",
            )
        if self.precision == "fp8" and cluster.gpu.peak_fp8_tflops is None:
            raise PlanError("precision", "fp8", f"gpu={cluster.gpu.name!r} has no FP8 tensor cores")
        if self.vp is not None and self.num_microbatches(cluster) < self.pp:
            raise PlanError(
                "vp",
                self.vp,
                f"the interleaved schedule needs at least pp={self.pp} micro-batches per step, "
                f"got {self.num_microbatches(cluster)}",
            )
