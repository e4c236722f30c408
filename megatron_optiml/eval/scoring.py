"""Log-likelihood of answer options given a prompt (rank classification, paper §4.1).

All options of an instance share its prompt, so an instance is one row: its prompt, then every
option's tokens, with a 4-D attention mask that lets each option see the prompt and its own
earlier tokens only (a prefix tree of depth one), and position ids that restart after the
prompt for every option. Several instances go through together as left-padded rows: one
decoder forward for the whole batch, no key/value cache to copy per option. The first option
token is scored from the prompt's last hidden state, and the LM head runs once per batch, on
the positions that predict option tokens only.

This is exact (the same log-likelihoods as a separate forward per option,
`score_options_naive`, up to float rounding): every scored position attends to exactly the
tokens, at exactly the positions, it would see in its own prompt + option row.
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

    One decoder forward and one LM-head matmul for the whole batch. Memory grows with
    (items) x (prompt + option tokens)^2 for the mask: keep batches small for long k-shot prompts.
    """
    if not items:
        return []
    for prompt, options in items:
        _check(prompt, options)
    device = next(model.parameters()).device
    base = model.base_model  # the decoder stack: hidden states, no LM head
    head = model.get_output_embeddings()

    # Row of item b: [pad][prompt][option 0 tokens 0..L-2][option 1 tokens 0..L-2]... (an
    # option's last token is never an input: tokens 0..L-2 predict 1..L-1).
    lengths = [len(p) + sum(len(o) - 1 for o in opts) for p, opts in items]
    width = max(lengths)
    ids = torch.full((len(items), width), PAD_ID, dtype=torch.long)
    positions = torch.zeros((len(items), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(items), 1, 1)  # pads see themselves
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    src, tgt, owner = [], [], []  # scored position, target token, option row
    r = 0
    for b, (prompt, options) in enumerate(items):
        pad, plen = width - lengths[b], len(prompt)
        start = pad + plen  # first option input of the row
        ids[b, pad:start] = torch.tensor(list(prompt), dtype=torch.long)
        positions[b, pad:start] = torch.arange(plen)
        allowed[b, pad:start, pad:start] = causal[:plen, :plen]
        for o in options:
            n = len(o) - 1  # option inputs
            end = start + n
            ids[b, start:end] = torch.tensor(list(o[:-1]), dtype=torch.long)
            positions[b, start:end] = torch.arange(plen, plen + n)
            allowed[b, start:end, pad : pad + plen] = True
            allowed[b, start:end, start:end] = causal[:n, :n]
            # Token 0 is predicted by the prompt's last position, token j by option input j-1.
            src += [b * width + pad + plen - 1] + [b * width + start + j for j in range(n)]
            tgt += list(o)
            owner += [r] * len(o)
            start, r = end, r + 1
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    hidden = base(
        input_ids=ids.to(device),
        attention_mask=mask.unsqueeze(1).to(device),  # [items, 1, query, key], additive
        position_ids=positions.to(device),
    ).last_hidden_state

    # The LM head once, on the scoring positions only (at OPT's 50k vocabulary it is a large
    # share of the work for short options).
    picked = hidden.reshape(-1, hidden.shape[-1])[torch.tensor(src, device=device)]
    logits = head(picked).float()
    targets = torch.tensor(tgt, dtype=torch.long, device=device).unsqueeze(-1)
    tok = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, -1)
    totals = torch.zeros(r, device=device).index_add(0, torch.tensor(owner, device=device), tok)
    totals = totals.tolist()

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
