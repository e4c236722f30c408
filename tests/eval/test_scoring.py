"""Rank classification: shared-prompt scoring equals a direct per-option computation."""

from __future__ import annotations

import pytest
import torch

from data_prep.render import render_example, render_target
from data_prep.schema import Instance, Task
from data_prep.tokenize import encode_examples
from megatron_optiml.eval.scoring import (
    OptionScore,
    normalized,
    pick,
    score_options,
    score_options_batch,
    score_options_naive,
)
from megatron_optiml.eval.tokens import EOS_ID, encode, fit_prompt
from megatron_optiml.tokenizer import cached_opt_tokenizer


def direct_logprob(model, prompt: list[int], option: list[int]) -> float:
    """log p(option | prompt) from one forward of the concatenation, token by token."""
    ids = torch.tensor([prompt + option])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(option))


def test_shared_prompt_equals_direct_computation(tiny_model):
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(4, 50000, (37,), generator=g).tolist()
    options = [torch.randint(4, 50000, (n,), generator=g).tolist() for n in (1, 4, 2, 7)]
    fast = score_options(tiny_model, prompt, options)
    naive = score_options_naive(tiny_model, prompt, options)
    direct = [direct_logprob(tiny_model, prompt, o) for o in options]
    assert [s.num_tokens for s in fast] == [1, 4, 2, 7]
    for f, n, d in zip(fast, naive, direct):
        assert f.logprob == pytest.approx(d, abs=1e-3)
        assert n.logprob == pytest.approx(d, abs=1e-3)
    # Options differ by tens of nats here, so a wrong padding or position would show.
    assert max(direct) - min(direct) > 1.0
    assert pick([s.logprob for s in fast]) == max(range(4), key=lambda i: direct[i])


def test_batch_of_instances_equals_per_instance_direct(tiny_model):
    """Left-padded prompts of different lengths, different option counts, one batch."""
    g = torch.Generator().manual_seed(7)

    def rand(n):
        return torch.randint(4, 50000, (n,), generator=g).tolist()

    items = [
        (rand(5), [rand(1), rand(3)]),
        (rand(41), [rand(2), rand(6), rand(1), rand(4)]),
        (rand(1), [rand(2)]),
        (rand(17), [rand(1), rand(1), rand(1)]),
    ]
    batched = score_options_batch(tiny_model, items)
    assert [len(b) for b in batched] == [2, 4, 1, 3]
    for (prompt, options), scores in zip(items, batched):
        direct = [direct_logprob(tiny_model, prompt, o) for o in options]
        assert [s.logprob for s in scores] == pytest.approx(direct, abs=1e-3)
        assert [s.num_tokens for s in scores] == [len(o) for o in options]


def test_single_token_options_need_no_second_forward(tiny_model):
    calls = []
    hook = tiny_model.base_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        score_options(tiny_model, [100, 200, 300], [[5], [6], [7]])
    finally:
        hook.remove()
    assert len(calls) == 1


def test_rank_classification_picks_highest_loglik_end_to_end(tiny_model):
    """Through the runner: the chosen option is the argmax of a direct computation."""
    from megatron_optiml.eval.config import EvalConfig
    from megatron_optiml.eval.runner import evaluate_model

    task = Task(
        name="t",
        benchmark="b",
        category="c",
        instruction_level="task",
        definition="Choose.",
        instances=[
            Instance(
                input=f"Question {i}?",
                outputs=["yes"],
                options=["yes", "no", "maybe so"],
                id=str(i),
            )
            for i in range(5)
        ],
    )
    cfg = EvalConfig(splits=["s"], shots=[0], predictions=True, progress=False)
    results, records = evaluate_model(tiny_model, {"s": [task]}, cfg)
    assert len(results) == len(records) == 5
    for inst, rec in zip(task.instances, records):
        prompt = render_example(task, inst, delimiter=cfg.delimiter).prompt
        ids = encode(prompt)
        direct = [
            direct_logprob(tiny_model, ids, encode(render_target(prompt, o))) for o in inst.options
        ]
        best = max(range(3), key=lambda i: direct[i])
        assert rec["prediction"] == inst.options[best]
        assert rec["option_logprobs"] == pytest.approx(direct, abs=1e-3)
        assert rec["metrics"]["accuracy"] == float(inst.options[best] == "yes")


def test_length_normalizations():
    s = OptionScore(logprob=-6.0, num_tokens=3)
    assert normalized(s, "sum", "abcdef") == -6.0
    assert normalized(s, "token", "abcdef") == -2.0
    assert normalized(s, "char", "abcdef") == -1.0
    with pytest.raises(ValueError, match="length_norm"):
        normalized(s, "mean", "x")
    # Sum prefers the short option, per-token the long one.
    short, long = OptionScore(-3.0, 1), OptionScore(-4.0, 4)
    assert pick([normalized(x, "sum", "") for x in (short, long)]) == 0
    assert pick([normalized(x, "token", "") for x in (short, long)]) == 1


def test_tokenization_matches_training_examples():
    """Prompt and target ids are what data_prep writes for training (target + </s>, no BOS)."""
    task = Task(name="t", benchmark="b", category="c", instruction_level="task", definition="Add.")
    inst = Instance(input="2 + 2 =", outputs=["4"])
    ex = render_example(task, inst)
    chunk = encode_examples(cached_opt_tokenizer(), [(ex.prompt, ex.target)], 2048)
    n_prompt = int(chunk.lengths[0])
    assert chunk.tokens[:n_prompt].tolist() == encode(ex.prompt)
    assert chunk.tokens[n_prompt:].tolist() == encode(ex.target) + [EOS_ID]
    assert encode(ex.prompt)[0] != 2  # no BOS </s> prepended


def test_fit_prompt_cuts_from_the_left():
    assert fit_prompt(list(range(10)), 4, 10) == [4, 5, 6, 7, 8, 9]
    assert fit_prompt(list(range(3)), 4, 10) == [0, 1, 2]
    with pytest.raises(ValueError, match="no room"):
        fit_prompt([1], 10, 10)


def test_empty_inputs_are_refused(tiny_model):
    with pytest.raises(ValueError, match="non-empty prompt"):
        score_options(tiny_model, [], [[1]])
    with pytest.raises(ValueError, match="at least one token"):
        score_options(tiny_model, [5], [[1], []])
