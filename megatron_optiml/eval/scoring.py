"""Log-likelihood of answer options given a prompt (rank classification, paper §4.1).

All options of an instance share its prompt, so the prompt runs once with `use_cache=True`;
its key/value cache is repeated over the options, and the options run as one right-padded
batch on top of it. Several instances go through together: their prompts as one left-padded
batch, then every option of every instance as one batch over the selected cache rows. The
first option token is scored from the prompt's last hidden state, and the LM head runs once
per batch, on real (unpadded) option positions only.

This is exact (the same log-likelihoods as a separate forward per option,
`score_options_naive`, up to float rounding): right padding sits after every real token, where
causal attention never looks, left padding is masked, and OPT derives position ids from the
attention mask, so every row sees the positions it would see alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from megatron_optiml.eval.tokens import PAD_ID


@dataclass(frozen=True)
class OptionScore:
    """Log-likelihood of one option's tokens given the prompt."""

    logprob: float
    """Sum of the option tokens' log-probabilities (natural log)."""
    num_tokens: int
    """Tokens scored."""


def _cache_kwarg(module) -> str:
    # transformers 5.x renamed `past_key_values` to `cache` (the old name warns, then goes).
    params = inspect.signature(module.forward).parameters
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
def score_options_batch(
    model, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]
) -> list[list[OptionScore]]:
    """Scores of every option of every `(prompt ids, [option ids, ...])` item, in order.

    Two decoder forwards and one LM-head matmul for the whole batch. Memory grows with
    (options in the batch) x (longest prompt): keep batches small for long k-shot prompts.
    """
    if not items:
        return []
    for prompt, options in items:
        _check(prompt, options)
    device = next(model.parameters()).device
    base = model.base_model  # the decoder stack: hidden states, no LM head
    head = model.get_output_embeddings()

    # 1) All prompts, left-padded, one forward with cache.
    width = max(len(p) for p, _ in items)
    p_ids = torch.full((len(items), width), PAD_ID, dtype=torch.long)
    p_mask = torch.zeros((len(items), width), dtype=torch.long)
    for b, (prompt, _) in enumerate(items):
        p_ids[b, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        p_mask[b, width - len(prompt) :] = 1
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    out = base(input_ids=p_ids, attention_mask=p_mask, use_cache=True)
    last = out.last_hidden_state[:, -1]  # predicts every option's first token

    # 2) Every option of every item, right-padded, over its prompt's cache rows.
    flat = [list(o) for _, options in items for o in options]
    owner = torch.repeat_interleave(
        torch.arange(len(items)), torch.tensor([len(opts) for _, opts in items])
    ).to(device)
    longest = max(len(o) for o in flat)
    ids = torch.full((len(flat), longest), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(flat), longest), dtype=torch.long)
    for r, o in enumerate(flat):
        ids[r, : len(o)] = torch.tensor(o, dtype=torch.long)
        mask[r, : len(o)] = 1
    ids, mask = ids.to(device), mask.to(device)
    hidden = last[owner].unsqueeze(1)  # (rows, 1, h): position predicting token 0
    if longest > 1:
        cache = _output_cache(out)
        cache.batch_select_indices(owner)
        # The last option token is never an input: tokens 0..L-2 predict 1..L-1.
        full_mask = torch.cat([p_mask[owner], mask[:, :-1]], 1)
        h = base(
            input_ids=ids[:, :-1], attention_mask=full_mask, **{_cache_kwarg(base): cache}
        ).last_hidden_state
        hidden = torch.cat([hidden, h], 1)  # (rows, L, h): position j predicts token j

    # 3) The LM head once, on real option positions only (at OPT's 50k vocabulary it is a
    # large share of the work for short options).
    real = mask.bool()
    logits = head(hidden[real]).float()
    tok = logits.gather(-1, ids[real].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    rows = torch.arange(len(flat), device=device).unsqueeze(1).expand_as(real)[real]
    totals = torch.zeros(len(flat), device=device).index_add(0, rows, tok).tolist()

    result, r = [], 0
    for _, options in items:
        result.append([OptionScore(totals[r + i], len(o)) for i, o in enumerate(options)])
        r += len(options)
    return result


def score_options(
    model, prompt: Sequence[int], options: Sequence[Sequence[int]]
) -> list[OptionScore]:
    """Scores of `options` after `prompt` (one instance; see `score_options_batch`)."""
    return score_options_batch(model, [(prompt, options)])[0]


@torch.inference_mode()
def score_options_naive(
    model, prompt: Sequence[int], options: Sequence[Sequence[int]]
) -> list[OptionScore]:
    """Reference: one full forward of prompt + option per option (what batching replaces)."""
    _check(prompt, options)
    device = next(model.parameters()).device
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    scores = []
    for o in options:
        ids = torch.tensor([list(prompt) + list(o)], dtype=torch.long, device=device)
        # Logits of the positions that predict option tokens only (the head is costly).
        kw = {"logits_to_keep": len(o) + 1} if keep else {}
        logits = model(input_ids=ids, **kw).logits[0, -len(o) - 1 : -1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        tgt = torch.tensor(list(o), dtype=torch.long, device=device)
        scores.append(OptionScore(float(logp[torch.arange(len(o)), tgt].sum()), len(o)))
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
