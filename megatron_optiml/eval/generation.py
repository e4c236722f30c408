"""Greedy generation (paper §4.1: until `</s>` or 256 new tokens), batched with left padding.

Prompts are sorted by length so a batch wastes little padding; results come back in the
input order. OPT derives position ids from the attention mask, so left padding leaves every
row's positions as if it ran alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from megatron_optiml.eval.tokens import EOS_ID, PAD_ID


def _generation_config(max_new_tokens: int):
    from transformers import GenerationConfig

    # Built here rather than read from the model folder: an exported generation_config.json
    # (sampling, min_length, ...) must not change what is evaluated.
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )


@torch.inference_mode()
def greedy_generate(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """New token ids per prompt, cut before the first `</s>` (which is not returned)."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generation needs non-empty prompts")
    device = next(model.parameters()).device
    gen_cfg = _generation_config(max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            n = len(prompts[i])
            ids[r, width - n :] = torch.tensor(list(prompts[i]), dtype=torch.long)
            mask[r, width - n :] = 1
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg
        )
        for r, i in enumerate(rows):
            new = out[r, width:].tolist()
            results[i] = new[: new.index(EOS_ID)] if EOS_ID in new else new
        if on_batch is not None:
            on_batch(len(rows))
    return results
