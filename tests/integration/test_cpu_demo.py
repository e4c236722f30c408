"""README's main job, end to end: the CPU demo script on the bundled data (shortened)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_demo_trains_exports_and_beats_its_untrained_start(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OUT": str(out), "STEPS": "150", "EVAL_LIMIT": "10", "SHOTS": "0"}
    proc = subprocess.run(
        ["bash", str(ROOT / "examples/cpu_demo/run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Training: validation loss fell clearly below its start.
    records = [json.loads(line) for line in (out / "run/metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["validation"]["all"] for r in records if "validation" in r}
    assert val[0] - val[max(val)] > 2.0, val
    assert (out / "run/checkpoints/latest_checkpointed_iteration.txt").read_text().strip() == "150"

    # Export: a Hugging Face folder transformers loads offline.
    from transformers import AutoTokenizer, OPTForCausalLM

    OPTForCausalLM.from_pretrained(out / "tuned_hf")
    assert AutoTokenizer.from_pretrained(out / "tuned_hf")("Hello world")["input_ids"] == [
        2,
        31414,
        232,
    ]

    # Evaluation: tuned beats its untrained start on held-out instances of seen tasks.
    results = json.loads((out / "eval/results.json").read_text())
    score = {
        m: results["models"][m]["scores"]["heldout_instance"]["mean"]["score"]
        for m in ("base", "tuned")
    }
    assert score["tuned"] > score["base"] + 0.02, score
    assert "tuned 0-shot" in (out / "eval/report.md").read_text()
    assert (out / "eval/categories.png").stat().st_size > 1000
