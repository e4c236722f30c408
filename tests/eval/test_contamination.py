"""n-gram contamination: other-task overlap is flagged, own-task overlap reported only."""

from __future__ import annotations

import pytest
from eval_fixtures import bench_tasks

from megatron_optiml.eval.contamination import contamination_report, train_texts_from_bench


def test_overlap_fractions_and_flags(bench_dir):
    report = contamination_report(
        bench_tasks(), train_texts_from_bench(bench_dir), n=13, threshold=0.01
    )
    copied = report["heldout_instance"]["copied"]
    # "one ... fourteen" (14 words + "numbers") shares 13-grams with train task "other".
    assert copied.overlapping == 1 and copied.fraction == 1.0 and copied.other_fraction == 1.0
    assert copied.flagged and copied.train_sources == ["other"]
    assert 0 < copied.mean_coverage < 1
    # Short instances (< 13 words) cannot overlap.
    assert report["heldout_instance"]["polarity"].overlapping == 0
    assert not report["heldout_category"]["odd_word"].flagged


def test_own_task_overlap_is_not_flagged():
    from data_prep.schema import Instance, Task

    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi"
    ev = Task(
        name="t",
        benchmark="b",
        category="c",
        instruction_level="task",
        instances=[Instance(input=text, outputs=["o"])],
    )
    report = contamination_report({"s": [ev]}, [("b__t", "prefix " + text)], n=13)
    c = report["s"]["t"]
    assert c.fraction == 1.0 and c.other_fraction == 0.0 and not c.flagged


def test_reads_indexed_train_datasets_when_no_train_text(tmp_path):
    """Without bench/train.jsonl, the train split's indexed datasets are decoded."""
    import json

    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron_optiml.eval.tokens import EOS_ID, encode

    prefix = tmp_path / "indexed" / "train" / "niv2__x"
    prefix.parent.mkdir(parents=True)
    b = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.uint16)
    p, t = encode("Summarize: hello world"), encode(" goodbye") + [EOS_ID]
    b.add_document(np.array(p + t, dtype=np.uint16), [len(p), len(t)])
    b.finalize(str(prefix) + ".idx")
    (tmp_path / "blend.json").write_text(
        json.dumps({"splits": {"train": {"prefixes": ["indexed/train/niv2__x"]}}}), encoding="utf-8"
    )
    assert list(train_texts_from_bench(tmp_path)) == [("niv2__x", "Summarize: hello world goodbye")]
    with pytest.raises(FileNotFoundError):
        list(train_texts_from_bench(tmp_path / "nowhere"))
