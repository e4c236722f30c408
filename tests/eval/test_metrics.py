"""ROUGE-L and exact match against hand-worked cases."""

from __future__ import annotations

import pytest

from megatron_optiml.eval.metrics import exact_match, normalize_answer, option_correct, rouge_l


def test_rouge_l_hand_worked():
    # LCS("the cat sat on the mat", "the cat on the mat") = 5 tokens: P = 5/5, R = 5/6.
    f = 2 * 1.0 * (5 / 6) / (1.0 + 5 / 6)
    assert rouge_l("the cat on the mat", ["the cat sat on the mat"]) == pytest.approx(f)
    # LCS("a b c d", "d c b a") = 1: P = R = 1/4.
    assert rouge_l("d c b a", ["a b c d"]) == pytest.approx(0.25)
    assert rouge_l("nothing shared", ["entirely different"]) == 0.0
    assert rouge_l("Positive", ["positive"]) == 1.0  # rouge-score lower-cases
    # Best over references; stemming makes "running" match "run".
    assert rouge_l("he is running", ["zzz", "he is run"]) == pytest.approx(1.0)


def test_exact_match_normalization():
    assert normalize_answer("  The  Cat, sat!  ") == "cat sat"
    assert exact_match("The cat.", ["cat"]) == 1.0
    assert exact_match("a cat", ["the  CAT"]) == 1.0
    assert exact_match("cats", ["cat"]) == 0.0
    assert exact_match("4 stars", ["5 stars", "4 stars"]) == 1.0
    assert exact_match("", ["x"]) == 0.0


def test_option_correct():
    assert option_correct("apple ", ["apple"]) == 1.0
    assert option_correct("Apple", ["apple"]) == 0.0  # options are compared as given
