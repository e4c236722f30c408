"""The parallel layout's arithmetic and rules, one set for the run config and the planner:
data-parallel size, micro-batches per step, and every check a TP/PP/VP/DP layout of an OPT
model must pass before Megatron-Core would refuse it later (or a GPU node would run it badly).

Callers name fields differently (the run config's dotted keys, the planner's short names), so a
broken rule raises :class:`LayoutError` with the rule's *role* and a reason written with the
caller's labels; each caller turns that into its own error naming its key and value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron_optiml.models.opt.flavors import OPTArch

# Shortest packed sequence: the packed dataset needs a prompt/target pair per pack.
MIN_SEQ_LENGTH = 2


class LayoutError(ValueError):
    """A broken layout rule: ``role`` is the layout field at fault (``tp``, ``pp``, ``vp``,
    ``sequence_parallel``, ``micro_batch_size``, ``global_batch_size``, ``seq_length``,
    ``world``), ``reason`` the explanation in the caller's labels."""

    def __init__(self, role: str, reason: str) -> None:
        self.role, self.reason = role, reason
        super().__init__(f"{role}: {reason}")


@dataclass(frozen=True, kw_only=True)
class Labels:
    """How a caller's messages name the layout's sizes inside a reason."""

    tp: str = "TP"
    pp: str = "PP"
    vp: str = "VP"
    dp: str = "DP"
    devices: str = "trainer.devices"
    """The per-node device count (the run config's ``trainer.devices``)."""


def data_parallel_size(world_size: int, tp: int, pp: int) -> int:
    """World size / (TP x PP); a ``ValueError`` when TP x PP does not divide the world."""
    if tp < 1 or pp < 1 or world_size % (tp * pp):
        raise ValueError(
            f"world size {world_size} is not divisible by tensor_model_parallel_size x "
            f"pipeline_model_parallel_size = {tp} x {pp}"
        )
    return world_size // (tp * pp)


@dataclass(frozen=True, kw_only=True)
class ParallelLayout:
    """One run's layout: model parallel sizes, batch and sequence shape, and the devices."""

    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size."""
    vp: int | None = None
    """Model chunks per pipeline rank (interleaved 1F1B); None = plain 1F1B."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (shards over the TP ranks)."""
    micro_batch_size: int = 1
    """Sequences per micro-batch per data-parallel rank."""
    global_batch_size: int
    """Sequences per optimizer step (micro batch x DP x micro-batches)."""
    seq_length: int
    """Tokens per (packed) sequence."""
    num_nodes: int = 1
    """Nodes."""
    devices_per_node: int = 1
    """Ranks (GPUs, or CPU gloo ranks) per node."""

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.devices_per_node

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp

    @property
    def data_parallel_size(self) -> int:
        return data_parallel_size(self.world_size, self.tp, self.pp)

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per rank per optimizer step (gradient accumulation)."""
        return self.global_batch_size // (self.micro_batch_size * self.data_parallel_size)


def check_layout(
    layout: ParallelLayout, arch: OPTArch, *, model: str = "the model", labels: Labels = Labels()
) -> None:
    """Raise :class:`LayoutError` for the first rule ``layout`` breaks on ``arch`` (``model``
    names it in messages). The rules, in order:

    sizes >= 1 and sequence length >= 2; sequence length <= the learned positions; TP divides
    the heads, the FFN width and the vocabulary; TP stays inside a node; sequence parallelism
    needs TP > 1 and a sequence length TP divides; interleaving needs VP >= 2 and PP > 1;
    PP x VP divides the layers; TP x PP divides the world size; micro batch x DP divides the
    global batch; the interleaved schedule needs a multiple of PP micro-batches.
    """
    lay, a, lb = layout, arch, labels
    for role in ("tp", "pp", "micro_batch_size", "global_batch_size"):
        if getattr(lay, role) < 1:
            raise LayoutError(role, "must be >= 1")
    if lay.num_nodes < 1 or lay.devices_per_node < 1:
        raise LayoutError("world", "nodes and devices per node must be >= 1")
    if lay.seq_length < MIN_SEQ_LENGTH:
        raise LayoutError("seq_length", f"must be >= {MIN_SEQ_LENGTH}")
    if lay.seq_length > a.max_position_embeddings:
        raise LayoutError(
            "seq_length",
            f"exceeds the model's {a.max_position_embeddings} learned positions; longer "
            "sequences have no position embedding",
        )
    tp = lay.tp
    if a.num_attention_heads % tp:
        raise LayoutError(
            "tp",
            f"{model} has {a.num_attention_heads} attention heads "
            f"(num_attention_heads={a.num_attention_heads}), not divisible by {lb.tp}",
        )
    if a.ffn_hidden_size % tp or a.vocab_size % tp:
        raise LayoutError(
            "tp",
            f"ffn_hidden_size={a.ffn_hidden_size} and vocab_size={a.vocab_size} must be "
            f"divisible by {lb.tp}",
        )
    if tp > lay.devices_per_node:
        raise LayoutError(
            "tp",
            f"exceeds {lb.devices}={lay.devices_per_node}: tensor parallelism communicates "
            "every layer and must stay on NVLink inside a node",
        )
    if lay.sequence_parallel:
        if tp == 1:
            raise LayoutError("sequence_parallel", f"needs {lb.tp} > 1 (it shards over TP ranks)")
        if lay.seq_length % tp:
            raise LayoutError(
                "seq_length", f"sequence parallelism needs it divisible by {lb.tp}={tp}"
            )
    if lay.vp is not None:
        if lay.vp < 2:
            raise LayoutError("vp", "interleaving needs >= 2 model chunks per pipeline rank")
        if lay.pp == 1:
            raise LayoutError("vp", f"the interleaved schedule needs {lb.pp} > 1")
    chunks = lay.pp * (lay.vp or 1)
    if a.num_layers % chunks:
        what = lb.pp if lay.vp is None else f"{lb.pp} x {lb.vp}"
        raise LayoutError(
            "pp" if lay.vp is None else "vp",
            f"{model} has {a.num_layers} layers (num_layers={a.num_layers}), not divisible by "
            f"{what}={chunks}",
        )
    if lay.world_size % lay.model_parallel_size:
        raise LayoutError(
            "world",
            f"world size {lay.world_size} ({lay.num_nodes} nodes x {lay.devices_per_node} "
            f"devices) is not divisible by {lb.tp} x {lb.pp} = {lay.model_parallel_size}",
        )
    dp = lay.data_parallel_size
    if lay.global_batch_size % (lay.micro_batch_size * dp):
        raise LayoutError(
            "global_batch_size",
            f"not divisible by micro_batch_size x {lb.dp} = {lay.micro_batch_size} x {dp}",
        )
    if lay.vp is not None and lay.num_microbatches % lay.pp:
        # Megatron-Core's interleaved 1F1B runs micro-batches in groups of PP per model chunk.
        raise LayoutError(
            "vp",
            f"the interleaved schedule needs a multiple of {lb.pp}={lay.pp} micro-batches per "
            f"step (at least {lb.pp}={lay.pp} micro-batches), got {lay.num_microbatches}",
        )
