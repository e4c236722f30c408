"""Greedy generation: batched left-padded results equal one-at-a-time, and `</s>` stops it."""

from __future__ import annotations

import torch
from eval_fixtures import tiny_opt

from megatron_optiml.eval.generation import greedy_generate


def test_batched_left_padded_equals_unbatched(tiny_model):
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15], [300, 400]]
    batched = greedy_generate(tiny_model, prompts, max_new_tokens=6, batch_size=4)
    single = [greedy_generate(tiny_model, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single
    assert all(len(o) == 6 for o in batched)  # a random model does not say </s>


def test_generation_stops_at_eos():
    model = tiny_opt(5)
    with torch.no_grad():
        # Final hidden state = e0 for every position, and e0 . embedding[2] dominates:
        # the tied LM head then predicts </s> (id 2) first.
        ln = model.model.decoder.final_layer_norm
        ln.weight.zero_()
        ln.bias.zero_()
        ln.bias[0] = 1.0
        model.model.decoder.embed_tokens.weight[2, 0] = 100.0
    assert greedy_generate(model, [[5, 6], [7]], max_new_tokens=5) == [[], []]
