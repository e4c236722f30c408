"""End to end on the bundled sample: indexed datasets, boundary round trip, blend, determinism."""

import copy
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from data_prep.blend import blend_per_split
from data_prep.pipeline import build_bench
from data_prep.render import render_sampled
from data_prep.schema import read_tasks_jsonl
from data_prep.splits import EVAL_SPLITS
from data_prep.tokenize import truncate_left
from megatron_optiml.tokenizer import load_opt_tokenizer

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden") / "bundled_sample_sha256.json"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _sha256(root: Path) -> dict[str, str]:
    """File hashes with the checkout's path (task `source` fields) replaced by "<repo>"."""
    return {
        name: hashlib.sha256(data.replace(str(REPO).encode(), b"<repo>")).hexdigest()
        for name, data in _files(root).items()
    }


def test_layout_and_blend(built_bench):
    cfg, res = built_bench
    out = res.out_dir
    for split in ("validation", *EVAL_SPLITS):
        tasks = read_tasks_jsonl(out / "bench" / f"{split}.jsonl")
        assert tasks and tasks[0].instances
    assert any(
        i.options
        for t in read_tasks_jsonl(out / "bench/heldout_category.jsonl")
        for i in t.instances
    )
    blend = json.loads((out / "blend.json").read_text())
    for split in ("train", "validation"):
        s = blend["splits"][split]
        assert sum(s["weights"]) == pytest.approx(1.0)
        for prefix in s["prefixes"]:
            assert (out / (prefix + ".bin")).exists() and (out / (prefix + ".idx")).exists()
    train, valid, test = blend_per_split(out / "blend.json")
    assert len(train[0]) == len(res.splits["train"]) and valid and test is None
    assert "| promptsource |" in (out / "summary.md").read_text()
    assert not out.with_name(out.name + ".partial").exists()


def test_prompt_target_boundary_round_trip(built_bench):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    cfg, res = built_bench
    tok = load_opt_tokenizer()
    checked = 0
    for split in ("train", "validation"):
        for task in res.splits[split]:
            prefix = res.out_dir / "indexed" / split / f"{task.benchmark}__{task.name}"
            ds = IndexedDataset(str(prefix))
            n = len(task.instances)
            assert len(ds) == 2 * n
            assert ds.document_indices.tolist() == list(range(0, 2 * n + 1, 2))
            assert ds[0].dtype == np.uint16
            for i in range(0, n, max(1, n // 5)):
                prompt_ids, target_ids = ds[2 * i].tolist(), ds[2 * i + 1].tolist()
                assert target_ids[-1] == 2 and 2 not in prompt_ids and prompt_ids[:1] != [0]
                ex = render_sampled(
                    task,
                    task.instances[i],
                    random.Random(f"{cfg.seed}:{split}:{task.name}:{i}"),
                    delimiters=cfg.render.delimiters,
                )
                p = tok.encode(ex.prompt).ids
                t = tok.encode(ex.target).ids + [2]
                p, t, _ = truncate_left(p, t, cfg.render.max_seq_length)
                assert (prompt_ids, target_ids) == (p, t)
                assert tok.decode(target_ids[:-1]) == ex.target
                checked += 1
            assert ds.sequence_lengths[1::2].min() >= 1
    assert checked > 50


def test_blend_records_the_lengths_the_trainer_checks(built_bench):
    """blend.json carries render.max_seq_length and each split's longest example, read from the
    indexed datasets; the trainer compares model.data.seq_length with them."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_optiml.data.blend import seq_length_warning

    cfg, res = built_bench
    path = res.out_dir / "blend.json"
    blend = json.loads(path.read_text())
    assert blend["max_seq_length"] == cfg.render.max_seq_length
    for entry in blend["splits"].values():
        longest = 0
        for prefix in entry["prefixes"]:
            ds = IndexedDataset(str(res.out_dir / prefix))  # keep it open: lengths are its mmap
            longest = max(longest, int(ds.sequence_lengths.reshape(-1, 2).sum(1).max()))
        assert entry["longest_example"] == longest <= cfg.render.max_seq_length
    longest = max(s["longest_example"] for s in blend["splits"].values())
    assert seq_length_warning(path, longest, ["train", "validation"]) is None
    warning = seq_length_warning(path, longest - 1, ["train", "validation"])
    assert f"model.data.seq_length={longest - 1} is below the longest example in {path}" in warning
    assert f"render.max_seq_length={cfg.render.max_seq_length}" in warning


def test_truncate_left_keeps_target():
    assert truncate_left([1, 2, 3], [4, 2], 4) == ([2, 3], [4, 2], 1)
    assert truncate_left([1], [5, 6, 7, 2], 3) == ([], [6, 7, 2], 2)
    assert truncate_left([1], [2], 5) == ([1], [2], 0)


def test_two_workers_and_reruns_are_byte_identical(built_bench, tmp_path):
    cfg, res = built_bench
    reference = _files(res.out_dir)
    cfg.tokenize.workers = 2
    cfg.tokenize.chunk_size = 7  # many small chunks interleaved between workers
    out = tmp_path / "out"
    build_bench(cfg, out, progress=False)
    assert _files(out) == reference
    # a killed run leaves <out>.partial behind: the rerun replaces it and gives the same bytes
    (tmp_path / "out.partial" / "indexed").mkdir(parents=True)
    (tmp_path / "out.partial" / "indexed" / "junk.bin.tmp").write_bytes(b"x")
    build_bench(cfg, out, progress=False)
    assert _files(out) == reference
    assert not (tmp_path / "out.partial").exists()


def test_refuses_to_replace_a_foreign_folder(built_bench, tmp_path):
    cfg, _ = built_bench
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_bench(cfg, tmp_path, progress=False)
    assert (tmp_path / "mine.txt").exists()


def test_cli_reports_bad_input(tmp_path, capsys, caplog):
    from data_prep.cli import main

    bad = tmp_path / "d"
    bad.mkdir()
    (bad / "ds_t.jsonl").write_text('{"prompt": "p", "completion": ""}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sources:\n  - {type: promptsource, path: d, benchmark: promptsource, datasets: [ds], category: qa}\n"
    )
    assert main(["--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "ds_t.jsonl:1: field 'completion' is empty" in caplog.text


def test_matches_the_serial_builder_byte_for_byte(built_bench, tmp_path):
    """Golden hashes of the bundled sample as built by the serial pipeline before the worker
    pool (commit 6c8e050, 1 worker, every PromptSource template application kept). The
    parallel pipeline must write the same bytes; if an intended change alters the output,
    rebuild and rewrite tests/data_prep/golden/."""
    cfg, _ = built_bench
    cfg = copy.deepcopy(cfg)
    for src in cfg.sources:
        src.template_sampling = "all"
    cfg.tokenize.workers = 2
    out = build_bench(cfg, tmp_path / "out", progress=False).out_dir
    assert _sha256(out) == json.loads(GOLDEN.read_text())


def test_every_stage_is_worker_count_independent(built_bench, tmp_path):
    """Held-out tasks by fraction, dropped leaks, k-shot (Zipf) demonstrations, train text and
    a busy n-gram report: 1 and 2 workers write the same files."""
    cfg, _ = built_bench
    cfg = copy.deepcopy(cfg)
    cfg.render.zipf_a = 2.0
    cfg.leak.policy = "drop"
    cfg.splits.heldout_task_fraction = 0.3
    cfg.write_train_text = True
    cfg.leak.ngram, cfg.leak.pair_threshold = 5, 0.0  # report every overlapping pair
    cfg.tokenize.chunk_size = 5
    files = {}
    for workers in (1, 2):
        cfg.tokenize.workers = workers
        files[workers] = _files(build_bench(cfg, tmp_path / f"w{workers}", progress=False).out_dir)
    assert files[1] == files[2]
    assert "bench/train.jsonl" in files[1]
    assert json.loads(files[1]["reports/task_pair_overlap.json"])  # the n-gram check ran
