"""Per-GPU memory of a Megatron-Core OPT run: parameters, gradients, Adam states, activations.

Parameter/state bytes follow Megatron-LM's ``theoretical_memory_usage.py`` (18 bytes/param,
or 6 + 12/DP with the distributed optimizer); activations follow Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models", Table 2), term by term so
that OPT's choices (ReLU, no attention dropout, fused attention) change what they change.
The peak adds to the stored activations the larger of two backward moments (the loss, or the
last layer's backward with its attention working set; :func:`backward_moments`), shapes read
from Megatron-Core 0.16.1's cross entropy, ``DotProductAttention`` and recompute checkpoint.
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


def attention_score_elements(inp: PlanInput) -> float:
    """Elements of one [b, a/t, s, s] attention-score tensor on one TP rank (the full
    sequence: under sequence parallelism attention runs after the all-gather)."""
    heads = inp.arch.num_attention_heads / inp.tp
    return inp.micro_batch_size * heads * inp.seq_length**2


def attention_score_buffer_bytes(inp: PlanInput) -> float:
    """Unfused attention only: the [b*a/t, s, s] tensor ``DotProductAttention`` takes from
    Megatron's global memory buffer as the ``baddbmm`` input. The buffer is allocated on the
    first forward and held for the rest of the run (weights-like, but in activation dtype)."""
    if inp.transformer_impl == "transformer_engine":
        return 0.0
    return _elem_bytes(inp) * attention_score_elements(inp)


def attention_working_set_bytes(inp: PlanInput) -> float:
    """Peak bytes of one layer's s^2 tensors while its core attention runs forward (also the
    selective/full recompute inside the backward) or backward, per TP rank.

    Unfused attention (``DotProductAttention`` + torch softmax in fp32), per score element:

    * 16-bit: at the cast of the probabilities back to 16 bits the forward holds the 16-bit
      ``baddbmm`` scores (e), their fp32 copy (4, masked in place), the fp32 softmax (4) and
      the 16-bit probabilities (e); in the backward, ``_softmax_backward_data`` holds the saved
      fp32 softmax, the fp32 incoming gradient and the fp32 gradient it writes (3 x 4). With
      e = 2 both are 12 bytes (the dropout mask and dropped probabilities, 1 + 2, come and go
      before either peak).
    * fp32 (no casts): scores + softmax + dropped probabilities + mask = 13 with attention
      dropout (forward, and the ``bmm`` backward), else the softmax backward's 12.

    Fused (TE/flash) attention materialises no s^2 tensor: 0.
    """
    if inp.transformer_impl == "transformer_engine":
        return 0.0
    e = _elem_bytes(inp)
    if e < 4:
        per_element = max(2 * e + 8, 12)
    else:
        per_element = 13 if inp.attention_dropout > 0 else 12
    return per_element * attention_score_elements(inp)


def layer_attention_side_bytes(inp: PlanInput) -> float:
    """What a layer still holds when its core-attention backward runs: the MLP half, the
    projection input and both dropout masks were consumed by the backward before it; left are
    the first LayerNorm's input and output (the QKV input) and q, k, v (the recompute
    checkpoint's inputs)."""
    a = inp.arch
    tokens = inp.seq_length * inp.micro_batch_size
    rep = tokens / (inp.tp if inp.sequence_parallel else 1)
    e = _elem_bytes(inp)
    return 2 * e * a.hidden_size * rep + 3 * e * a.hidden_size * tokens / inp.tp


def tied_output_grad_bytes(inp: PlanInput) -> float:
    """pp = 1: the output layer uses the word-embedding parameter itself, so autograd keeps its
    16-bit weight gradient [V/t, h] in the parameter's input buffer until the embedding's own
    gradient arrives, i.e. through the whole decoder backward. With pp > 1 the last stage's
    copy is a separate parameter whose gradient goes to the main-grad buffer at once."""
    if inp.pp > 1:
        return 0.0
    return _elem_bytes(inp) * inp.arch.vocab_size * inp.arch.hidden_size / inp.tp


def logits_copy_bytes(inp: PlanInput) -> float:
    """16-bit runs: the loss works on an fp32 copy of the [s, b, V/t] logits (counted in
    :func:`output_activation_bytes`), so at the end of the forward the model's 16-bit logits
    sit next to it, and in the backward the fp32 gradient (the softmax, updated in place) is
    cast back to the logits' dtype before the output layer's backward. fp32 runs: ``.float()``
    returns the logits themselves, no copy."""
    e = _elem_bytes(inp)
    if e == 4:
        return 0.0
    return e * inp.arch.vocab_size * inp.seq_length * inp.micro_batch_size / inp.tp


def mlp_backward_grad_bytes(inp: PlanInput) -> float:
    """At the ReLU's backward the fc2-input gradient and the ReLU-input gradient, both
    [s, b, f/t] in activation dtype, coexist while the layer's stored tensors are all alive."""
    tokens = inp.seq_length * inp.micro_batch_size
    return 2 * _elem_bytes(inp) * inp.arch.ffn_hidden_size * tokens / inp.tp


def decoder_backward_delta(inp: PlanInput) -> float:
    """Bytes the backward of a stage's last decoder layer adds to the stored activations at its
    peak, per TP rank. The layer holds either everything it stored plus
    :func:`mlp_backward_grad_bytes` (its MLP backward), or, at its core-attention backward,
    only :func:`layer_attention_side_bytes` plus :func:`attention_working_set_bytes` in place
    of what it stored (:func:`layer_activation_bytes`). Under full recompute "what it stored"
    at those moments is the rebuilt layer's recompute-free activations, while the stored
    total counts only its checkpointed input (the same tensor as the first LayerNorm's input).
    """
    held = layer_activation_bytes(inp, recompute="none" if inp.recompute == "full" else None)
    inside = max(
        held + mlp_backward_grad_bytes(inp),
        layer_attention_side_bytes(inp) + attention_working_set_bytes(inp),
    )
    return inside - layer_activation_bytes(inp)


def stage_stored_terms(inp: PlanInput, num_microbatches: int, stage: str) -> dict[str, float]:
    """Bytes the forward passes of the in-flight micro-batches leave for the backward on one
    GPU of the 'first' or 'last' stage, by term (what autograd keeps alive)."""
    layers = inp.arch.num_layers // inp.pp
    in_flight = microbatches_in_flight(inp, num_microbatches, stage)
    terms = {"decoder layers": layers * in_flight * layer_activation_bytes(inp)}
    first = stage == "first" or inp.pp == 1
    last = stage == "last" or inp.pp == 1
    if first:
        terms["embeddings"] = in_flight * embedding_activation_bytes(inp)
    if last:
        terms["output layer + loss"] = output_activation_bytes(inp)
    return terms


def backward_moments(inp: PlanInput, stage: str) -> dict[str, dict[str, float]]:
    """The candidate peaks on top of the stored decoder layers and embeddings, by term.

    'loss' (last stage): the end of the forward / the loss backward, when the output layer's
    inputs, the fp32 softmax and the 16-bit logits (or their gradient) coexist. 'decoder': the
    backward of the stage's last layer, after the output layer's tensors were freed, with the
    tied output-weight gradient waiting (pp = 1). The first stage of a pipeline has only the
    latter, and its forward end (nothing on top) when that is negative.
    """
    last = stage == "last" or inp.pp == 1
    moments: dict[str, dict[str, float]] = {}
    if last:
        moments["loss"] = {
            "output layer + loss": output_activation_bytes(inp),
            "16-bit logits / their gradient": logits_copy_bytes(inp),
        }
    else:
        moments["forward end"] = {}
    moments["decoder"] = {
        "last layer's backward working set": decoder_backward_delta(inp),
        "tied output-weight gradient": tied_output_grad_bytes(inp) if last else 0.0,
    }
    return moments


def stage_activation_terms(inp: PlanInput, num_microbatches: int, stage: str) -> dict[str, float]:
    """Peak activation bytes on one GPU of the 'first' or 'last' stage, by term: the stored
    decoder layers and embeddings, the persistent attention-score buffer (unfused attention),
    and the terms of whichever :func:`backward_moments` candidate is largest."""
    stored = stage_stored_terms(inp, num_microbatches, stage)
    terms = {k: v for k, v in stored.items() if k != "output layer + loss"}
    buffer = attention_score_buffer_bytes(inp)
    if buffer:
        terms["attention score buffer (persistent)"] = buffer
    moments = backward_moments(inp, stage)
    peak = max(moments.values(), key=lambda m: sum(m.values()))
    terms.update({k: v for k, v in peak.items() if v})
    return terms
