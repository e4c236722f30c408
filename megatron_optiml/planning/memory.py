"""Per-GPU memory of a Megatron-Core OPT run: parameters, gradients, Adam states, activations.

Parameter/state bytes follow Megatron-LM's ``theoretical_memory_usage.py`` (18 bytes/param,
or 6 + 12/DP with the distributed optimizer); activations follow Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models", Table 2), term by term so
that OPT's choices (ReLU, no attention dropout, fused attention) change what they change.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.planning.layout import PlanInput

GIB = 2**30


@dataclass(frozen=True, kw_only=True)
class StageParams:
    """Parameters one GPU of a pipeline stage holds (its TP shard)."""

    transformer: int
    """Decoder-layer parameters (this stage's layers, TP-sharded where Megatron shards)."""
    embedding: int
    """Word (vocab-parallel) + position (replicated) embeddings; first stage only."""
    output: int
    """Final LayerNorm, plus the tied output-embedding copy on the last stage when pp > 1."""
    linear: int
    """Of ``transformer``, the GEMM weights (what FP8 runs through tensor cores)."""

    @property
    def total(self) -> int:
        return self.transformer + self.embedding + self.output


def layer_params(arch: OPTArch, tp: int) -> tuple[int, int, int]:
    """(TP-sharded, replicated, GEMM-weight) parameters of one decoder layer on one TP rank.

    Sharded: QKV weight+bias, proj weight, fc1 weight+bias, fc2 weight. Replicated: the proj
    and fc2 biases (added after the reduction) and both LayerNorms.
    """
    h, f = arch.hidden_size, arch.ffn_hidden_size
    sharded = (4 * h * h + 3 * h + 2 * h * f + f) // tp
    replicated = 2 * h + 4 * h
    linear = (4 * h * h + 2 * h * f) // tp
    return sharded, replicated, linear


def stage_params(arch: OPTArch, *, tp: int, pp: int, stage: str) -> StageParams:
    """Parameters per GPU on the 'first' or 'last' pipeline stage (the same stage when pp=1)."""
    h = arch.hidden_size
    sharded, replicated, linear = layer_params(arch, tp)
    layers = arch.num_layers // pp
    first = stage == "first" or pp == 1
    last = stage == "last" or pp == 1
    embedding = (arch.vocab_size * h // tp + arch.max_position_embeddings * h) if first else 0
    output = 0
    if last:
        output = 2 * h  # final LayerNorm
        if pp > 1:
            # Tied embeddings across stages: the last stage keeps its own copy of the word
            # embeddings as output_layer.weight, kept equal by an embedding-group all-reduce.
            output += arch.vocab_size * h // tp
    return StageParams(
        transformer=layers * (sharded + replicated),
        embedding=embedding,
        output=output,
        linear=layers * linear,
    )


@dataclass(frozen=True, kw_only=True)
class StateBytes:
    """Bytes per parameter of model state on one GPU."""

    weights: float
    grads: float
    optimizer: float


def state_bytes_per_param(inp: PlanInput, dp: int) -> StateBytes:
    """Weights / main grads / Adam states per parameter (Megatron mixed precision)."""
    if inp.precision == "fp32":
        # fp32 params are their own master copy: Adam keeps m and v only.
        weights, grads, optimizer = 4.0, 4.0, 8.0
    else:
        # 16-bit params; fp32 main grads (grad_reduce_in_fp32) or 16-bit ones; Adam keeps an
        # fp32 master copy plus fp32 m and v: 12 bytes (the paper's "fp32 Adam states").
        weights = 2.0
        grads = 4.0 if inp.grad_reduce_in_fp32 else 2.0
        optimizer = 12.0
    if inp.use_distributed_optimizer:
        optimizer /= dp
    return StateBytes(weights=weights, grads=grads, optimizer=optimizer)


def _elem_bytes(inp: PlanInput) -> int:
    # FP8 runs keep activations in bf16 between TE modules (the FP8 copies TE saves for the
    # backward come on top and are not modelled: the estimate is low by up to ~1 byte per
    # GEMM input there).
    return 4 if inp.precision == "fp32" else 2


def layer_activation_terms(inp: PlanInput, *, recompute: str | None = None) -> dict[str, float]:
    """Bytes one decoder layer stores for the backward, for one micro-batch, per TP rank.

    Korthikanti et al.'s 34*sbh + 5*a*s^2*b, term by term: replicated terms are divided by t
    only under sequence parallelism, TP-sharded terms always. OPT-specific: the ReLU stores its
    output, which is the fc2 input (GeLU would also keep its 8sbh input); without attention
    dropout the probabilities are not stored twice; fused (flash) attention stores no s^2
    term but a float32 log-sum-exp per head and token.
    """
    recompute = inp.recompute if recompute is None else recompute
    a = inp.arch
    s, b, t = inp.seq_length, inp.micro_batch_size, inp.tp
    h, f, heads = a.hidden_size, a.ffn_hidden_size, a.num_attention_heads
    e = _elem_bytes(inp)
    tokens = s * b
    rep = tokens / (t if inp.sequence_parallel else 1)
    shard = tokens / t
    if recompute == "full":
        # Only the layer input survives the forward; the rest is rebuilt one layer at a time.
        return {"layer input (checkpoint)": e * h * rep}
    mask = 1 if inp.hidden_dropout > 0 else 0
    terms = {
        "layernorm inputs (2)": 2 * e * h * rep,
        "qkv/fc1 inputs (layernorm outputs)": 2 * e * h * rep,
        "dropout masks (2)": 2 * mask * h * rep,
        "q, k, v": 3 * e * h * shard,
        "attention output (proj input)": e * h * shard,
        "relu output (fc2 input)": e * f * shard,
    }
    if inp.transformer_impl == "transformer_engine":
        terms["attention log-sum-exp (fp32)"] = 4 * heads * shard
    elif recompute == "none":
        # Unfused attention: softmax output (float32 under attention_softmax_in_fp32 without
        # the fused kernel), dropout mask, and the 16-bit probabilities the AV bmm keeps.
        attn_mask = 1 if inp.attention_dropout > 0 else 0
        terms["attention softmax (fp32)"] = 4 * heads * s * shard
        terms["attention dropout mask"] = attn_mask * heads * s * shard
        terms["attention probs (16-bit)"] = e * heads * s * shard
    return terms


def layer_activation_bytes(inp: PlanInput, *, recompute: str | None = None) -> float:
    return sum(layer_activation_terms(inp, recompute=recompute).values())


def embedding_activation_bytes(inp: PlanInput) -> float:
    """First stage, one micro-batch: int64 token and position ids the two lookups keep, and
    the embedding-dropout mask (sequence-sharded under sequence parallelism)."""
    tokens = inp.seq_length * inp.micro_batch_size
    mask = 1 if inp.hidden_dropout > 0 else 0
    rep = tokens / (inp.tp if inp.sequence_parallel else 1)
    return 16 * tokens + mask * inp.arch.hidden_size * rep


def output_activation_bytes(inp: PlanInput) -> float:
    """Last stage, one micro-batch: final LayerNorm input, output-layer input and the float32
    vocab-parallel softmax the cross entropy keeps (Megatron's 4sbh(1 + V/h), per TP rank)."""
    a = inp.arch
    tokens = inp.seq_length * inp.micro_batch_size
    rep = tokens / (inp.tp if inp.sequence_parallel else 1)
    e = _elem_bytes(inp)
    return 2 * e * a.hidden_size * rep + 4 * a.vocab_size * tokens / inp.tp


def microbatches_in_flight(inp: PlanInput, num_microbatches: int, stage: str) -> float:
    """Micro-batches whose activations a stage holds at its peak under 1F1B, in units of a
    full stage's layers.

    Plain 1F1B: stage k warms up with p - k forwards, so the first stage holds min(p, m) and
    the last one. Interleaved (v chunks): the first stage holds 2(p-1) + (v-1)p + 1 chunk
    forwards of L/(pv) layers, i.e. p + (p-1)/v stages' worth (Megatron-LM's
    ``interleaved_schedule_memory_penalty``).
    """
    p = inp.pp
    if p == 1 or stage == "last":
        return 1.0
    if inp.vp is None:
        return float(min(p, num_microbatches))
    return min(p + (p - 1) / inp.vp, float(num_microbatches))


def stage_activation_terms(inp: PlanInput, num_microbatches: int, stage: str) -> dict[str, float]:
    """Peak activation bytes on one GPU of the 'first' or 'last' stage, by term."""
    layers = inp.arch.num_layers // inp.pp
    in_flight = microbatches_in_flight(inp, num_microbatches, stage)
    terms = {"decoder layers": layers * in_flight * layer_activation_bytes(inp)}
    if inp.recompute == "full":
        # During the backward of one layer its full forward is rebuilt (no recompute inside).
        terms["recomputed layer working set"] = layer_activation_bytes(inp, recompute="none")
    first = stage == "first" or inp.pp == 1
    last = stage == "last" or inp.pp == 1
    if first:
        terms["embeddings"] = in_flight * embedding_activation_bytes(inp)
    if last:
        terms["output layer + loss"] = output_activation_bytes(inp)
    return terms
