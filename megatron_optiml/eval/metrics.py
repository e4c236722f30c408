"""Per-instance metrics: ROUGE-L F1 (`rouge-score`) and normalized exact match, best over outputs.

Exact match normalizes both sides the SQuAD / Super-NaturalInstructions way (lower case, no
punctuation, no articles a/an/the, single spaces). ROUGE-L uses `rouge-score`'s own tokenizer
(lower case, ASCII letters and digits) with Porter stemming, as NI's evaluation does.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in references))


@functools.cache
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """Best ROUGE-L F1 of `prediction` against any of `references` (0..1)."""
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    scorer = _scorer()
    return max(scorer.score(r, prediction)["rougeL"].fmeasure for r in references)


def option_correct(chosen: str, references: Sequence[str]) -> float:
    """Rank classification: 1.0 if the chosen option is one of the acceptable outputs."""
    return float(chosen.strip() in {r.strip() for r in references})
