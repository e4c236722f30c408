"""Failed builds on real faults: a full disk (small tmpfs) and bad input leave nothing behind."""

import logging
import shutil
from pathlib import Path

from data_prep.cli import main
from megatron_optiml.testing.faults import small_disk

REPO = Path(__file__).resolve().parents[2]
BENCH_CONFIG = REPO / "examples" / "data_prep" / "bench_config.yaml"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_full_disk_keeps_the_previous_build(built_bench, tmp_path, caplog):
    _, res = built_bench
    # Room for one build (~0.9 MB) but not for a second one beside it.
    with small_disk(tmp_path / "disk", "1400k") as disk:
        out = disk / "bench"
        shutil.copytree(res.out_dir, out)
        before = _files(out)
        caplog.set_level(logging.INFO)
        argv = ["--config", str(BENCH_CONFIG), "--out", str(out), "--no-progress"]
        assert main([*argv, "--workers", "1"]) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert "no space left on device" in errors[0]
        assert f"{out}.partial" in errors[0] and "\n" not in errors[0]
        assert sorted(p.name for p in disk.iterdir()) == ["bench"]  # no bench.partial
        assert _files(out) == before


def test_a_bad_override_names_the_key_and_writes_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "o"
    argv = ["--config", str(BENCH_CONFIG), "--out", str(out), "--no-progress"]
    assert main([*argv, "render.max_seq_lenght=512"]) == 1
    assert main([*argv, "tokenize.workers=two"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert "render.max_seq_lenght" in errors[0] and "max_seq_length" in errors[0]
    assert "tokenize.workers" in errors[1] and "two" in errors[1]
    assert not out.exists() and not (tmp_path / "o.partial").exists()


def test_failed_build_leaves_no_partial_folder(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "ds_t.jsonl").write_text('{"prompt": "p", "completion": ""}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sources:\n  - {type: promptsource, path: d, benchmark: promptsource, "
        "datasets: [ds], category: qa}\n"
    )
    assert main(["--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "d"]
