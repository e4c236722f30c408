"""Hand-worked memory, FLOP, bubble and step-time numbers of the planner."""

import math

import pytest

from megatron_optiml.models.opt.flavors import OPT_FLAVORS, OPTArch, get_flavor
from megatron_optiml.planning import (
    GIB,
    ClusterSpec,
    PlanInput,
    make_plan,
    megatron_step_flops,
    step_flops,
    with_changes,
)
from megatron_optiml.planning.memory import (
    layer_activation_bytes,
    layer_params,
    microbatches_in_flight,
    stage_activation_terms,
    stage_params,
)

DEBUG = get_flavor("opt-debug")  # L=2, h=64, a=4, f=256, V=50272, P=2048


def cluster(gpus=8, nodes=1, gpu="h100-80gb"):
    return ClusterSpec.from_gpu(gpu, num_nodes=nodes, gpus_per_node=gpus)


def test_layer_params_by_hand():
    # h=64, f=256: sharded = 4h^2 + 3h (qkv w+b, proj w) + 2hf + f (fc1 w+b, fc2 w)
    #            = 16384 + 192 + 32768 + 256; replicated = proj/fc2 biases + 2 LayerNorms = 6h.
    assert layer_params(DEBUG, 1) == (49600, 384, 49152)
    assert layer_params(DEBUG, 2) == (24800, 384, 24576)


@pytest.mark.parametrize("name", sorted(OPT_FLAVORS))
def test_stage_params_add_up_to_the_model(name):
    arch = OPT_FLAVORS[name]
    assert stage_params(arch, tp=1, pp=1, stage="first").total == arch.num_parameters()
    # pp=2: the last stage holds a second copy of the (tied) word embeddings.
    first = stage_params(arch, tp=1, pp=2, stage="first").total
    last = stage_params(arch, tp=1, pp=2, stage="last").total
    assert first + last == arch.num_parameters() + arch.vocab_size * arch.hidden_size


def test_state_bytes_18_per_param_and_distributed_optimizer_divides_by_dp():
    inp = PlanInput(arch=DEBUG, global_batch_size=8, use_distributed_optimizer=False)
    plain = make_plan(inp, cluster()).stages[0]
    n = DEBUG.num_parameters()
    assert (plain.weights, plain.grads, plain.optimizer) == (2 * n, 4 * n, 12 * n)
    dist = make_plan(with_changes(inp, use_distributed_optimizer=True), cluster()).stages[0]
    assert dist.optimizer == pytest.approx(plain.optimizer / 8)  # dp = 8
    assert (dist.weights, dist.grads) == (plain.weights, plain.grads)
    bf16_grads = make_plan(with_changes(inp, grad_reduce_in_fp32=False), cluster()).stages[0]
    assert bf16_grads.grads == 2 * n
    fp32 = make_plan(with_changes(inp, precision="fp32"), cluster()).stages[0]
    assert (fp32.weights, fp32.grads, fp32.optimizer) == (4 * n, 4 * n, 8 * n)


def test_layer_activations_by_hand():
    # s=32, b=2 -> 64 tokens; TE (fused attention), dropout 0.1, bf16, tp=1.
    inp = PlanInput(arch=DEBUG, global_batch_size=2, micro_batch_size=2, seq_length=32)
    per_token = (
        2 * 2 * 64  # two LayerNorm inputs
        + 2 * 2 * 64  # their outputs (qkv / fc1 inputs)
        + 2 * 64  # two 1-byte dropout masks
        + 3 * 2 * 64  # q, k, v
        + 2 * 64  # attention output
        + 2 * 256  # ReLU output = fc2 input
        + 4 * 4  # fp32 log-sum-exp per head
    )
    assert per_token == 1680
    assert layer_activation_bytes(inp) == 64 * per_token


def test_unfused_attention_is_korthikanti_with_relu_and_fp32_softmax():
    # Korthikanti et al.: sbh(34 + 5as/h). OPT's ReLU keeps no separate input (-8) and the
    # unfused softmax output is float32 (+2 per a*s); with attention dropout on.
    arch = OPTArch(num_layers=2, hidden_size=128, num_attention_heads=8, ffn_hidden_size=512)
    s, b, h, a = 256, 1, 128, 8
    inp = PlanInput(
        arch=arch,
        global_batch_size=1,
        seq_length=s,
        transformer_impl="local",
        recompute="none",
        attention_dropout=0.1,
    )
    assert layer_activation_bytes(inp) == s * b * h * (26 + 7 * a * s / h)
    selective = with_changes(inp, recompute="selective")
    assert layer_activation_bytes(selective) == s * b * h * 26
    full = with_changes(inp, recompute="full")
    assert layer_activation_bytes(full) == 2 * s * b * h


def test_tensor_and_sequence_parallel_split_the_right_terms():
    base = dict(arch=get_flavor("opt-1.3b"), global_batch_size=8, seq_length=2048)
    h, s = 2048, 2048
    t1 = layer_activation_bytes(PlanInput(**base))
    t4 = layer_activation_bytes(PlanInput(**base, tp=4))
    t4sp = layer_activation_bytes(PlanInput(**base, tp=4, sequence_parallel=True))
    replicated = s * h * 10  # 2 LN inputs + 2 LN outputs (bf16) + 2 masks
    assert t4 == pytest.approx(replicated + (t1 - replicated) / 4)
    assert t4sp == pytest.approx(t1 / 4)


def test_1f1b_in_flight_microbatches_and_interleaving():
    inp = PlanInput(arch=get_flavor("opt-30b"), global_batch_size=64, pp=4)
    assert microbatches_in_flight(inp, 16, "first") == 4
    assert microbatches_in_flight(inp, 2, "first") == 2
    assert microbatches_in_flight(inp, 16, "last") == 1
    # Megatron-LM: interleaved penalty 1 + (p-1)/(p v) on p micro-batches.
    vp = with_changes(inp, vp=3)
    assert microbatches_in_flight(vp, 16, "first") == pytest.approx(4 * (1 + 3 / 12))
    first = stage_activation_terms(inp, 16, "first")
    last = stage_activation_terms(inp, 16, "last")
    assert first["decoder layers"] == pytest.approx(4 * last["decoder layers"])
    assert "embeddings" in first and "output layer + loss" in last
    assert "output layer + loss" not in first


def test_flops_match_megatron_closed_form():
    for name in ("opt-30b", "opt-175b"):
        arch = get_flavor(name)
        f = step_flops(arch, global_batch_size=256, seq_length=2048, recompute="none")
        closed = megatron_step_flops(arch, global_batch_size=256, seq_length=2048)
        assert f.model == pytest.approx(closed, rel=1e-12)
        assert f.executed == pytest.approx(closed, rel=1e-12)
        full = step_flops(arch, global_batch_size=256, seq_length=2048, recompute="full")
        # Full recompute re-runs every layer forward, not the logits: 96 (1 + s/6h) + 6V/h.
        b, s, n, h, v = 256, 2048, arch.num_layers, arch.hidden_size, arch.vocab_size
        assert full.executed == pytest.approx(
            96 * b * s * n * h * h * (1 + s / (6 * h) + v / (16 * n * h)), rel=1e-12
        )


def test_bubble_step_time_and_tokens_per_second():
    arch = get_flavor("opt-13b")
    c = cluster(gpus=8, nodes=2)  # 16 GPUs
    inp = PlanInput(
        arch=arch, tp=2, pp=4, micro_batch_size=1, global_batch_size=32, recompute="none", mfu=0.5
    )
    plan = make_plan(inp, c)
    assert plan.dp == 2 and plan.num_microbatches == 16
    assert plan.bubble == pytest.approx(3 / 16)
    expected_compute = plan.flops.executed / (16 * 989e12 * 0.5)
    assert plan.compute_s == pytest.approx(expected_compute)
    assert plan.step_s == pytest.approx(expected_compute * (1 + 3 / 16))
    assert plan.tokens_per_s == pytest.approx(32 * 2048 / plan.step_s)
    interleaved = make_plan(with_changes(inp, vp=2), c)
    assert interleaved.bubble == pytest.approx(3 / 32)


def test_fp8_runs_gemms_at_fp8_peak_only():
    arch = get_flavor("opt-30b")
    inp = PlanInput(arch=arch, tp=8, global_batch_size=64, recompute="none")
    bf16 = make_plan(inp, cluster())
    fp8 = make_plan(with_changes(inp, precision="fp8"), cluster())
    f = bf16.flops
    assert fp8.compute_s == pytest.approx((f.gemm / 1979e12 + f.other / 989e12) / (8 * inp.mfu))
    assert 1.5 < bf16.step_s / fp8.step_s < 2.0


def test_overheads_are_stated_terms():
    inp = PlanInput(arch=DEBUG, global_batch_size=8, fragmentation=0.25, fixed_overhead_gib=1.5)
    m = make_plan(inp, cluster()).stages[0]
    assert m.fragmentation == pytest.approx(0.25 * m.activations)
    assert m.overhead == 1.5 * GIB
    assert m.total == pytest.approx(
        m.weights + m.grads + m.optimizer + 1.25 * m.activations + 1.5 * GIB
    )
    assert math.isfinite(m.total)
