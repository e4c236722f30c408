"""Aggregation subtask -> task -> category -> split, and the 0/5-shot mean."""

from __future__ import annotations

import pytest

from megatron_optiml.eval.aggregate import InstanceResult, aggregate, subtask_of


def r(task, cat, shots, iid, score, split="s", bench="b"):
    return InstanceResult(
        split, task, cat, bench, shots, iid, "accuracy", score, {"accuracy": score}
    )


def test_subtask_of():
    assert subtask_of("ag_news_classify:4", "ag_news") == "ag_news_classify"
    assert subtask_of("17", "t") == "t"
    assert subtask_of("a:b", "t") == "t"  # no numeric suffix: not a subtask id


def test_hand_worked_aggregation():
    results = [
        # task A: subtask x (1, 1, 0) = 2/3, subtask y (0) = 0 -> task 1/3 (not the 2/4 of instances)
        r("A", "cat1", 0, "x:0", 1.0),
        r("A", "cat1", 0, "x:1", 1.0),
        r("A", "cat1", 0, "x:2", 0.0),
        r("A", "cat1", 0, "y:0", 0.0),
        # task B (same category): 1.0
        r("B", "cat1", 0, "0", 1.0, bench="c"),
        # task C, category 2: 0.5
        r("C", "cat2", 0, "0", 1.0),
        r("C", "cat2", 0, "1", 0.0),
        # 5-shot: every task 1.0
        r("A", "cat1", 5, "x:0", 1.0),
        r("B", "cat1", 5, "0", 1.0, bench="c"),
        r("C", "cat2", 5, "0", 1.0),
    ]
    out = aggregate(results)["s"]
    zero = out["shots"]["0"]
    assert zero["tasks"]["A"]["score"] == pytest.approx(1 / 3)
    assert zero["tasks"]["A"]["instances"] == 4
    assert zero["tasks"]["A"]["subtasks"]["x"] == {"score": pytest.approx(2 / 3), "instances": 3}
    assert zero["categories"]["cat1"]["score"] == pytest.approx((1 / 3 + 1) / 2)
    assert zero["categories"]["cat1"]["tasks"] == ["A", "B"]
    assert zero["categories"]["cat2"]["score"] == pytest.approx(0.5)
    # split = mean of categories, not of tasks or instances
    assert zero["score"] == pytest.approx(((1 / 3 + 1) / 2 + 0.5) / 2)
    assert zero["benchmarks"]["b"]["score"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert zero["benchmarks"]["c"]["score"] == pytest.approx(1.0)
    assert out["shots"]["5"]["score"] == pytest.approx(1.0)
    mean = out["mean"]
    assert mean["shots"] == [0, 5]
    assert mean["tasks"]["A"]["score"] == pytest.approx((1 / 3 + 1) / 2)
    assert mean["categories"]["cat2"]["score"] == pytest.approx(0.75)
    assert mean["score"] == pytest.approx((zero["score"] + 1.0) / 2)


def test_splits_are_kept_apart():
    out = aggregate([r("A", "c", 0, "0", 1.0, split="s1"), r("A", "c", 0, "0", 0.0, split="s2")])
    assert out["s1"]["shots"]["0"]["score"] == 1.0
    assert out["s2"]["shots"]["0"]["score"] == 0.0
