"""Checkpoints cross the two supported Megatron-Core lines (0.16 on Python 3.11, 0.19 on 3.12).

The "peer" is the other environment's Python (``OPTIML_PEER_PYTHON``, set by
scripts/run_tests.sh when both venvs exist). The peer trains and saves; this environment
resumes the training and converts the checkpoint to Hugging Face. Run in both environments (as
CI does), this covers both directions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from megatron_optiml.backend import compat

# Six launches (the peer trains; both convert, this one refuses a foreign checkpoint, both
# resume); the last five at once, ~1 min on quiet cores.
pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "recipes" / "opt_debug_cpu.yaml"
PEER = os.environ.get("OPTIML_PEER_PYTHON")


@pytest.fixture(scope="module")
def peer() -> str:
    if not PEER:
        if os.environ.get("CI"):
            pytest.fail("CI runs both environments: OPTIML_PEER_PYTHON must name the other one")
        pytest.skip("no peer environment (OPTIML_PEER_PYTHON); scripts/run_tests.sh sets it")
    return PEER


def _installed_mcore(python: str) -> str:
    """The megatron-core distribution installed for ``python`` (what a checkpoint it writes
    must record), without importing Megatron there."""
    code = "from importlib.metadata import version; print(version('megatron-core'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def _train(python: str, bench: Path, run_dir: Path, max_steps: int) -> dict[int, float]:
    cmd = [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "train.py"),
        "--config",
        str(RECIPE),
        f"model.data.blend_path={bench}",
        f"exp_manager.explicit_log_dir={run_dir}",
        f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=0",
        "model.data.seq_length=256",
        "model.optim.sched.warmup_steps=1",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    metrics = run_dir / "metrics.jsonl"
    before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    records = [json.loads(line) for line in metrics.read_text().splitlines()[before:]]
    # The steps this launch took (metrics.jsonl is appended to across launches).
    return {r["step"]: r["loss"] for r in records if "loss" in r and "step" in r}


def _to_hf(python: str, root: Path, out: Path) -> dict:
    cmd = [python, "-m", "checkpoints_conversion", "megatron-to-hf", str(root), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def _refusal(ckpt: Path, work: Path) -> subprocess.CompletedProcess:
    """This environment's converter on a copy of ``ckpt`` without ``common.pt``."""
    foreign = work / "foreign"
    shutil.copytree(ckpt, foreign)
    (foreign / "common.pt").unlink()
    cmd = [sys.executable, "-m", "checkpoints_conversion", "megatron-to-hf"]
    return subprocess.run(
        [*cmd, str(foreign), str(work / "hf_foreign")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )


def test_peer_checkpoint_resumes_and_converts_here(peer, bench_blend, tmp_path):
    here_v, peer_v = compat.MCORE_VERSION_STR, _installed_mcore(peer)
    assert here_v.split(".")[:2] != peer_v.split(".")[:2], (here_v, peer_v)

    # The peer trains 2 steps and saves (the checkpoint records who wrote it).
    run = tmp_path / "run"
    first = _train(peer, bench_blend, run, max_steps=2)
    assert sorted(first) == [1, 2]
    ckpt = run / "checkpoints" / "iter_0000002"
    written = json.loads((ckpt / "optiml_mcore_version.json").read_text())["megatron_core"]
    assert written == peer_v
    assert (ckpt / "common.pt").exists()  # readable by 0.16 whichever line wrote it

    # Everything below reads the peer's run folder or a copy of it: the launches run at once,
    # so the second core works while the first runs a single-process conversion.
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    shutil.copytree(run, ours)
    shutil.copytree(run, theirs)
    refuse = here_v.startswith("0.16.") and not peer_v.startswith("0.16.")
    with ThreadPoolExecutor(max_workers=5) as pool:
        hf_here = pool.submit(_to_hf, sys.executable, run / "checkpoints", tmp_path / "hf_here")
        hf_peer = pool.submit(_to_hf, peer, run / "checkpoints", tmp_path / "hf_peer")
        refusal = pool.submit(_refusal, ckpt, tmp_path) if refuse else None
        here = pool.submit(_train, sys.executable, bench_blend, ours, max_steps=3)
        there = pool.submit(_train, peer, bench_blend, theirs, max_steps=3)

    # Conversion: this environment exports the same weights as the writer does itself.
    from_here, from_peer = hf_here.result(), hf_peer.result()
    assert from_here.keys() == from_peer.keys() and len(from_here) > 10
    for name, t in from_peer.items():
        assert t.dtype == from_here[name].dtype and t.equal(from_here[name]), name

    if refusal is not None:
        # A 0.19 checkpoint without the common.pt our saves add (as plain Megatron-LM writes
        # it): refused in one line naming both versions, not a traceback.
        res = refusal.result()
        assert res.returncode != 0
        assert "Traceback" not in res.stderr, res.stderr[-3000:]
        last = res.stderr.strip().splitlines()[-1]
        assert peer_v in last and here_v in last and "common.pt" in last, last

    # Resume here: model, Adam state, scheduler, counters and data position come back, so
    # step 3 is the step the writer takes when it resumes from its own checkpoint.
    resumed_here, resumed_peer = here.result(), there.result()
    assert sorted(resumed_here) == sorted(resumed_peer) == [3]  # resumed, not restarted
    assert resumed_here[3] == pytest.approx(resumed_peer[3], abs=1e-5), (here_v, peer_v)
