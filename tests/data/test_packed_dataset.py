"""Packed samples built through BlendedMegatronDatasetBuilder: content, masks, blend, determinism."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from data_fixtures import read_all_examples, write_blend

from megatron_optiml.data import (
    PackedInstructionDatasetConfig,
    blend_per_split,
    build_packed_datasets,
    load_blend,
    write_examples,
)

SEQ = 64


def build(blend_path, num_packs=(40, None, None), seed=1234, **kw):
    config = PackedInstructionDatasetConfig(
        random_seed=seed,
        sequence_length=kw.pop("sequence_length", SEQ),
        blend_per_split=blend_per_split(load_blend(blend_path)),
        pack_window=kw.pop("pack_window", 32),
        **kw,
    )
    return build_packed_datasets(config, list(num_packs))


def segments(sample):
    cu = sample["cu_seqlens"].tolist()
    return list(zip(cu[:-1], cu[1:]))


def test_packs_hold_whole_examples_with_label_only_loss(blend_path):
    train, valid, test = build(blend_path)
    assert len(train) >= 40 and len(valid) > 0 and len(test) > 0
    originals = read_all_examples(blend_path, "train")
    for p in range(len(train)):
        x = train[p]
        assert all(x[k].shape == (SEQ,) for k in ("tokens", "labels", "loss_mask", "position_ids"))
        segs = segments(x)
        assert segs[0][0] == 0 and segs[-1][1] == SEQ
        for k, (lo, hi) in enumerate(segs):
            toks = x["tokens"][lo:hi].tolist()
            assert np.all(x["segment_ids"][lo:hi] == k)
            assert np.array_equal(x["position_ids"][lo:hi], np.arange(hi - lo))  # restart
            if toks[0] == 1:  # the padding tail: no loss, pad labels
                assert lo > 0 and set(toks) == {1} and x["loss_mask"][lo:hi].sum() == 0
                assert set(x["labels"][lo:hi].tolist()) == {1}
                continue
            seq, prompt_len = originals[toks[0]]
            assert toks == seq  # a whole example, never split
            assert toks[-1] == 2  # closes with </s>
            labels, mask = x["labels"][lo:hi], x["loss_mask"][lo:hi]
            assert np.array_equal(labels[:-1], seq[1:])  # next token inside the example
            assert mask[-1] == 0 and labels[-1] == 1  # never predicts the neighbour's first token
            # Loss exactly on the target tokens (incl. </s>), as the labels they predict.
            assert labels[mask == 1].tolist() == seq[max(prompt_len, 1) :]
            assert mask.sum() == len(seq) - max(prompt_len, 1)


def test_target_closing_eos_carries_loss(blend_path):
    train, _, _ = build(blend_path)
    x = train[0]
    for lo, hi in segments(x):
        if x["tokens"][lo] != 1:
            assert x["labels"][hi - 2] == 2 and x["loss_mask"][hi - 2] == 1


def test_same_seed_same_samples_other_seed_other_order(blend_path):
    a, _, _ = build(blend_path)
    b, _, _ = build(blend_path)
    c, _, _ = build(blend_path, seed=7)
    assert len(a) == len(b)
    for p in range(len(a)):
        for k, v in a[p].items():
            assert np.array_equal(v, b[p][k]), (p, k)
    assert any(not np.array_equal(a[p]["tokens"], c[p]["tokens"]) for p in range(10))


def test_one_pass_splits_hold_every_example_once(blend_path):
    _, valid, test = build(blend_path)
    for ds, split in ((valid, "validation"), (test, "test")):
        seen = collections.Counter(
            int(x["tokens"][lo])
            for x in (ds[p] for p in range(len(ds)))
            for lo, _ in segments(x)
            if x["tokens"][lo] != 1
        )
        assert set(seen) == set(read_all_examples(blend_path, split)) and set(seen.values()) == {1}


def test_train_follows_blend_weights_in_examples(tmp_path):
    path = write_blend(
        tmp_path, {"train": {"n": [50, 50, 50], "weights": [0.6, 0.3, 0.1], "max_prompt": 20}}
    )
    (train,) = [d for d in build(path, num_packs=(300, None, None)) if d is not None]
    counts = collections.Counter()
    firsts = collections.Counter()
    for p in range(len(train)):
        x = train[p]
        for lo, _ in segments(x):
            if x["tokens"][lo] != 1:
                counts[(int(x["tokens"][lo]) - 1000) // 100] += 1
                firsts[int(x["tokens"][lo])] += 1
    total = sum(counts.values())
    shares = [counts[t] / total for t in range(3)]
    assert shares == pytest.approx([0.6, 0.3, 0.1], abs=0.02)
    # Within a task, epochs are whole permutations: counts of any two examples differ by <= 1.
    for t in range(3):
        c = [firsts[1000 + 100 * t + i] for i in range(50)]
        assert max(c) - min(c) <= 1


def test_long_examples_are_left_truncated_keeping_the_target(tmp_path):
    prompt, target = list(range(10, 110)), [7, 8, 9, 2]
    write_examples(str(tmp_path / "long"), [(prompt, target), ([5], [6, 2])])
    config = PackedInstructionDatasetConfig(
        random_seed=0,
        sequence_length=16,
        blend_per_split=[([str(tmp_path / "long")], [1.0]), None, None],
    )
    train, _, _ = build_packed_datasets(config, [2, None, None])
    packs = [train[p] for p in range(len(train))]
    full = next(x for x in packs if x["tokens"][-1] == 2 and x["tokens"][0] != 5)
    assert full["tokens"].tolist() == (prompt + target)[-16:]
    assert full["labels"][full["loss_mask"] == 1].tolist() == target


def test_missing_eos_is_refused(tmp_path):
    write_examples(str(tmp_path / "bad"), [([5], [6, 7])])
    config = PackedInstructionDatasetConfig(
        random_seed=0,
        sequence_length=16,
        blend_per_split=[([str(tmp_path / "bad")], [1.0]), None, None],
    )
    train, _, _ = build_packed_datasets(config, [1, None, None])
    with pytest.raises(ValueError, match="</s>"):
        train[0]


def test_config_validation():
    with pytest.raises(ValueError, match="pack_algorithm"):
        PackedInstructionDatasetConfig(random_seed=0, sequence_length=16, pack_algorithm="x")
    with pytest.raises(ValueError, match="pad_token_id"):
        PackedInstructionDatasetConfig(random_seed=0, sequence_length=16, pad_token_id=2)


def test_a_longer_run_keeps_the_packs_of_a_shorter_one(blend_path):
    short, _, _ = build(blend_path, num_packs=(20, None, None))
    long, _, _ = build(blend_path, num_packs=(60, None, None))
    # Same blended example stream prefix, so every full window packs identically.
    full_windows = len(short.examples) // 32 * 32
    same = [
        p
        for p in range(len(short))
        if short.pack_members[short.pack_offsets[p + 1] - 1] < full_windows
    ]
    assert len(same) >= 10
    for p in same:
        assert np.array_equal(short[p]["tokens"], long[p]["tokens"])
