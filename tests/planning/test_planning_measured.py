"""The planner's memory model against a live Megatron-Core model on CPU (target: within 15%).

Measured: storage bytes of parameters, DDP grad buffers and optimizer states (main params +
Adam moments) after one step, the distinct storages autograd keeps alive for the backward
after a forward, and the peak of the bytes the CPU allocator holds during one forward +
backward (``record_peak``: stored activations plus the backward's working set).
"""

import pytest

from megatron_optiml.models.opt.flavors import OPTArch, get_flavor
from megatron_optiml.planning import ClusterSpec, make_plan
from megatron_optiml.planning.measure import (
    measure_tiny_run,
    tiny_run_plan_input,
    tiny_run_worker,
)
from megatron_optiml.planning.memory import stage_activation_terms, stage_stored_terms
from megatron_optiml.testing.distributed import free_port, run_distributed

TOLERANCE = 0.15
# Small vocabulary so the decoder layers, not the logits, dominate the activations.
TINY = OPTArch(
    num_layers=4,
    hidden_size=128,
    num_attention_heads=4,
    ffn_hidden_size=512,
    vocab_size=1024,
    max_position_embeddings=256,
)
SEQ, MBS = 128, 2


def predicted(arch, recompute, *, gpus=1, distributed=False, seq=SEQ, mbs=MBS):
    inp = tiny_run_plan_input(
        arch,
        seq_length=seq,
        micro_batch_size=mbs,
        recompute=recompute,
        use_distributed_optimizer=distributed,
        data_parallel=gpus,
    )
    stage = make_plan(inp, ClusterSpec.from_gpu("h100-80gb", gpus_per_node=gpus)).stages[0]
    # What the forward saves; the backward's working set comes on top (see the peak test).
    return stage, sum(stage_stored_terms(inp, 1, "first").values())


def predicted_peak(arch, recompute, *, seq, mbs):
    inp = tiny_run_plan_input(arch, seq_length=seq, micro_batch_size=mbs, recompute=recompute)
    terms = stage_activation_terms(inp, 1, "first")
    return terms, sum(terms.values())


@pytest.fixture(scope="module")
def measured():
    mp = pytest.MonkeyPatch()
    mp.setenv("WORLD_SIZE", "1")
    mp.setenv("RANK", "0")
    mp.setenv("MASTER_ADDR", "127.0.0.1")
    mp.setenv("MASTER_PORT", str(free_port()))
    try:
        yield {
            rc: measure_tiny_run(
                TINY, seq_length=SEQ, micro_batch_size=MBS, recompute=rc, measure_peak=True
            )
            for rc in ("none", "selective", "full")
        }
    finally:
        mp.undo()


def test_model_state_bytes_match(measured):
    m = measured["none"]
    stage, _ = predicted(TINY, "none")
    assert m.num_parameters == TINY.num_parameters()
    # Exact on one rank: 2 (bf16) + 4 (fp32 main grad) + 12 (fp32 master, m, v) bytes/param.
    assert m.states.weights == stage.weights
    assert m.states.grads == stage.grads
    assert m.states.optimizer == stage.optimizer


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_saved_activation_bytes_within_15_percent(measured, recompute):
    _, pred = predicted(TINY, recompute)
    meas = measured[recompute].saved_activation_bytes
    # Known CPU gaps, all making the measurement larger: CPU dropout keeps a bf16 noise
    # tensor (GPU: a 1-byte mask) and the causal mask is rebuilt per layer.
    assert abs(pred - meas) / meas < TOLERANCE, (pred, meas)


# Which moment peaks depends on the shape: s^2 large against V (the recomputed attention of the
# last layer, after the output layer's tensors are freed) or V large (the loss, when the 16-bit
# logits or their gradient sit next to the fp32 softmax).
ATTENTION_HEAVY = (TINY, 256, 2, "last layer's backward working set")
LOSS_HEAVY = (
    OPTArch(
        num_layers=4,
        hidden_size=128,
        num_attention_heads=4,
        ffn_hidden_size=512,
        vocab_size=16384,
        max_position_embeddings=256,
    ),
    64,
    2,
    "16-bit logits / their gradient",
)


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_forward_backward_peak_within_15_percent(measured, recompute):
    # Peak of live CPU bytes during forward + backward (profiler allocation events) against
    # stored activations + the persistent attention-score buffer + the larger backward moment.
    # CPU runs 0.86-0.96 of measured: its dropout noise is bf16 (GPU: 1-byte mask) and its
    # GEMMs allocate bf16 -> fp32 temporaries the GPU does not.
    _, pred = predicted_peak(TINY, recompute, seq=SEQ, mbs=MBS)
    meas = measured[recompute].peak_bytes
    assert abs(pred - meas) / meas < TOLERANCE, (pred, meas)


@pytest.mark.parametrize("case", [ATTENTION_HEAVY, LOSS_HEAVY], ids=["attention", "loss"])
def test_backward_peak_moment_matches_measurement(case):
    arch, seq, mbs, winning_term = case
    mp = pytest.MonkeyPatch()
    for k, v in dict(WORLD_SIZE="1", RANK="0", MASTER_ADDR="127.0.0.1").items():
        mp.setenv(k, v)
    mp.setenv("MASTER_PORT", str(free_port()))
    try:
        m = measure_tiny_run(
            arch, seq_length=seq, micro_batch_size=mbs, recompute="selective", measure_peak=True
        )
    finally:
        mp.undo()
    terms, pred = predicted_peak(arch, "selective", seq=seq, mbs=mbs)
    assert winning_term in terms
    # Without the backward working set the prediction would be over 30% low in both cases.
    assert abs(pred - m.peak_bytes) / m.peak_bytes < TOLERANCE, (pred, m.peak_bytes)
    assert m.peak_bytes > m.saved_activation_bytes * 1.3


def test_recompute_ordering_is_what_was_measured(measured):
    sizes = [measured[rc].saved_activation_bytes for rc in ("none", "selective", "full")]
    assert sizes[0] > sizes[1] > sizes[2]


@pytest.mark.distributed
def test_distributed_optimizer_divides_optimizer_states_by_dp():
    arch = get_flavor("opt-debug")
    kwargs = dict(seq_length=16, micro_batch_size=1, use_distributed_optimizer=True)
    results = run_distributed(tiny_run_worker, 2, arch, kwargs)
    stage, _ = predicted(arch, "none", gpus=2, distributed=True, seq=16, mbs=1)
    for r in results:
        assert r.states.optimizer == pytest.approx(stage.optimizer, rel=TOLERANCE)
        assert r.states.optimizer == pytest.approx(12 * arch.num_parameters() / 2, rel=0.01)
        assert r.states.grads == stage.grads and r.states.weights == stage.weights
