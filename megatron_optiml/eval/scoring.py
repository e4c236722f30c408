"""Log-likelihood of answer options given a prompt (rank classification, paper §4.1).

All options of an instance share its prompt, so the prompt runs once with `use_cache=True`; its
key/value cache is repeated over the options, and the options run as one right-padded batch on
top of it. The first option token is scored from the prompt's last logits, so single-token
options cost one forward in all. This is exact (same logits as a separate forward per option,
`score_options_naive`, up to float rounding) because right padding sits after every real
token, where causal attention never looks.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OptionScore:
    """Log-likelihood of one option's tokens given the prompt."""

    logprob: float
    """Sum of the option tokens' log-probabilities (natural log)."""
    num_tokens: int
    """Tokens scored."""


def _cache_kwarg(model) -> str:
    # transformers 5.x renamed `past_key_values` to `cache` (the old name warns, then goes).
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _check(prompt: Sequence[int], options: Sequence[Sequence[int]]) -> None:
    if not prompt:
        raise ValueError("rank classification needs a non-empty prompt")
    if not options or any(len(o) == 0 for o in options):
        raise ValueError("every option needs at least one token")


@torch.inference_mode()
def score_options(
    model, prompt: Sequence[int], options: Sequence[Sequence[int]]
) -> list[OptionScore]:
    """Score every option after `prompt` with one prompt forward and one batched option forward."""
    _check(prompt, options)
    device = next(model.parameters()).device
    n = len(options)
    p = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    out = model(input_ids=p, use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    longest = max(len(o) for o in options)
    ids = torch.full((n, longest), 1, dtype=torch.long, device=device)
    mask = torch.zeros((n, longest), dtype=torch.long, device=device)
    for i, o in enumerate(options):
        ids[i, : len(o)] = torch.tensor(list(o), dtype=torch.long)
        mask[i, : len(o)] = 1
    total = first[ids[:, 0]]  # (n,)
    if longest > 1:
        cache = _output_cache(out)
        cache.batch_repeat_interleave(n)
        # The last option token is never an input: only tokens 0..L-2 predict 1..L-1.
        inputs, attn = ids[:, :-1], mask[:, :-1]
        full_mask = torch.cat(
            [torch.ones((n, p.shape[1]), dtype=torch.long, device=device), attn], 1
        )
        logits = model(
            input_ids=inputs, attention_mask=full_mask, **{_cache_kwarg(model): cache}
        ).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        tok = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (n, L-1)
        total = total + (tok * mask[:, 1:]).sum(-1)
    return [OptionScore(float(total[i]), len(o)) for i, o in enumerate(options)]


@torch.inference_mode()
def score_options_naive(
    model, prompt: Sequence[int], options: Sequence[Sequence[int]]
) -> list[OptionScore]:
    """Reference: one full forward of prompt + option per option (what batching replaces)."""
    _check(prompt, options)
    device = next(model.parameters()).device
    scores = []
    for o in options:
        ids = torch.tensor([list(prompt) + list(o)], dtype=torch.long, device=device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        pos = torch.arange(len(prompt) - 1, len(prompt) + len(o) - 1, device=device)
        tgt = torch.tensor(list(o), dtype=torch.long, device=device)
        scores.append(OptionScore(float(logp[pos, tgt].sum()), len(o)))
    return scores


def normalized(score: OptionScore, norm: str, text: str) -> float:
    """The option's ranking value: `sum` log-likelihood, or per `token`, or per `char` of `text`."""
    if norm == "sum":
        return score.logprob
    if norm == "token":
        return score.logprob / max(score.num_tokens, 1)
    if norm == "char":
        return score.logprob / max(len(text), 1)
    raise ValueError(f"length_norm={norm!r} is not one of ('sum', 'token', 'char')")


def pick(values: Sequence[float]) -> int:
    """Index of the largest value (the first on ties, so results do not depend on sort order)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))
