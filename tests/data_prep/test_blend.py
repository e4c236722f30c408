import json

import pytest

from data_prep.blend import DatasetEntry, blend_per_split, blend_weights, write_blend


def _e(task, bench, n):
    return DatasetEntry(
        prefix=f"indexed/train/{bench}__{task}",
        task=task,
        benchmark=bench,
        category="c",
        num_examples=n,
    )


def test_eps_then_shares_hand_worked():
    # caps (eps 4096): a 4096, b 100, c 50, d 200; sum 4446
    entries = [_e("a", "niv2", 10000), _e("b", "niv2", 100), _e("c", "ps", 50), _e("d", "bb", 200)]
    w = blend_weights(entries, eps_cap=4096, benchmark_shares={"niv2": 0.5, "ps": 0.3, "flan": 0.2})
    # listed & present: niv2 .5, ps .3 -> rest .2; bb is unlisted: target = P_bb * .2
    p_bb = 200 / 4446
    raw = [0.5 * 4096 / 4196, 0.5 * 100 / 4196, 0.3, p_bb * 0.2]
    total = sum(raw)
    assert w == pytest.approx([r / total for r in raw])
    assert sum(w) == pytest.approx(1.0)


def test_shares_are_exact_when_all_benchmarks_listed():
    entries = [
        _e("a", "niv2", 10),
        _e("b", "niv2", 30),
        _e("c", "ps", 5),
        _e("p", "pretrain", 1000),
    ]
    w = blend_weights(
        entries, eps_cap=20, benchmark_shares={"niv2": 0.25, "ps": 0.45, "pretrain": 0.05}
    )
    total = 0.75
    # within niv2: capped 10 and 20 -> 1/3, 2/3
    assert w == pytest.approx([0.25 / 3 / total, 0.5 / 3 / total, 0.45 / total, 0.05 / total])


def test_benchmark_cap_override():
    entries = [_e("a", "niv2", 100), _e("b", "niv2", 10)]
    w = blend_weights(entries, eps_cap=4096, benchmark_shares={}, benchmark_caps={"niv2": 10})
    assert w == pytest.approx([0.5, 0.5])


def test_blend_file_round_trip(tmp_path):
    entries = [_e("a", "niv2", 3), _e("b", "ps", 0)]
    write_blend(
        tmp_path, {"train": (entries, [1.0, 0.0])}, eps_cap=4096, benchmark_shares={"niv2": 1.0}
    )
    blend = json.loads((tmp_path / "blend.json").read_text())
    assert blend["format"] == "megatron_optiml.blend/v1"
    assert blend["splits"]["train"] == {
        "prefixes": ["indexed/train/niv2__a"],
        "weights": [1.0],
        "num_examples": [3],
    }
    assert (tmp_path / "data_args_train.txt").read_text() == "1.0 indexed/train/niv2__a\n"
    train, valid, test = blend_per_split(tmp_path / "blend.json")
    assert (
        train == ([str(tmp_path / "indexed/train/niv2__a")], [1.0])
        and valid is None
        and test is None
    )
