"""Token ids of evaluation prompts and targets, made exactly as data_prep makes training examples.

data_prep/tokenize.py encodes the prompt and the target separately with OPT's tokenizer (the
target keeps the leading space `render_target` gives it), adds no BOS, appends `</s>` to the
target, and cuts over-long examples from the left. Evaluation reuses those pieces
(`cached_opt_tokenizer`, `EOS_ID`, `truncate_left`), so a prompt scored here is token for token
the prompt the model was trained on. `fit_prompt(..., bos=True)` puts OPT's BOS in front, as
HF's OPT tokenizer (and so lm-evaluation-harness) does, for comparing numbers with those tools.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_prep.tokenize import EOS_ID, truncate_left
from megatron_optiml.tokenizer import PAD_ID, cached_opt_tokenizer

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "decode", "encode", "fit_prompt"]

# OPT's BOS is its EOS, `</s>` (id 2): HF's OPT tokenizer (bos_token='</s>') prepends it to
# every text. Not the dictionary's `<s>` (id 0, `megatron_optiml.tokenizer.BOS_ID`), which OPT
# never feeds.
BOS_ID = EOS_ID


def encode(text: str) -> list[int]:
    """OPT token ids of `text`, no special tokens added (empty text -> [])."""
    return cached_opt_tokenizer().encode(text).ids if text else []


def decode(ids: Sequence[int]) -> str:
    """Text of `ids` without special tokens."""
    return cached_opt_tokenizer().decode(list(ids), skip_special_tokens=True)


def fit_prompt(prompt: list[int], room: int, max_positions: int, *, bos: bool = False) -> list[int]:
    """`prompt` cut from the left so `room` more tokens (targets or generation) still fit;
    with `bos`, `[BOS_ID]` + the prompt, the BOS kept when the prompt is cut."""
    extra = 1 if bos else 0
    if room + extra >= max_positions:
        raise ValueError(f"{room} target/generation tokens leave no room in {max_positions}")
    kept, _, _ = truncate_left(prompt, [0] * room, max_positions - extra)
    return [BOS_ID] + kept if bos else kept
