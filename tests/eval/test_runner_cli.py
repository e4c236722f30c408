"""End to end: optiml-evaluate on two tiny models and a bench folder -> JSON, tables, plot."""

from __future__ import annotations

import json

import pytest

from megatron_optiml.cli.evaluate import main
from megatron_optiml.eval.config import EvalConfig


def test_cli_writes_every_report(model_dirs, bench_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(
        [
            *("--model", str(model_dirs[0]), "--model", str(model_dirs[1])),
            *("--bench", str(bench_dir), "--out", str(out)),
            *("--splits", "heldout_category", "heldout_instance"),
            *("--shots", "0", "5", "--max-new-tokens", "3", "--predictions", "--no-progress"),
        ]
    )
    assert rc == 0
    payload = json.loads((out / "results.json").read_text())
    assert set(payload["models"]) == {"base", "tuned"}
    scores = payload["models"]["base"]["scores"]
    assert set(scores) == {"heldout_category", "heldout_instance"}
    inst = scores["heldout_instance"]
    assert set(inst["shots"]) == {"0", "5"}
    polarity = inst["shots"]["0"]["tasks"]["polarity"]
    assert polarity["metric"] == "rougeL" and polarity["instances"] == 6
    assert set(polarity["subtasks"]) == {"tmplA", "tmplB"}
    assert set(polarity["metrics"]) == {"rougeL", "exact_match"}
    mc = scores["heldout_category"]["shots"]["5"]["tasks"]["odd_word"]
    assert mc["metric"] == "accuracy" and {
        "accuracy_sum",
        "accuracy_token",
        "accuracy_char",
    } <= set(mc["metrics"])
    assert inst["mean"]["score"] == pytest.approx(
        (inst["shots"]["0"]["score"] + inst["shots"]["5"]["score"]) / 2
    )
    assert payload["contamination"]["heldout_instance"]["copied"]["flagged"]

    md = (out / "report.md").read_text()
    assert md == capsys.readouterr().out  # the CLI prints the tables
    for text in (
        "## heldout_category",
        "### By category",
        "### By benchmark",
        "### By task",
        "base 5-shot",
        "tuned mean",
        "analogical reasoning",
        "⚠",
    ):
        assert text in md
    flagged = [line for line in md.splitlines() if line.startswith("| copied |")]
    assert flagged and "⚠" in flagged[0]
    assert (out / "categories.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    preds = [json.loads(x) for x in (out / "predictions" / "base.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * (4 + 6 + 1)  # two shot counts x instances
    five = [p for p in preds if p["shots"] == 5 and p["task"] == "polarity"]
    assert all(p["id"] not in p["demonstrations"] for p in five)
    assert {p["demo_source"] for p in five} == {
        "train"
    }  # bench/train.jsonl has 8 polarity instances
    assert all(len(p["demonstrations"]) == 5 for p in five)


def test_limit_and_bad_arguments(model_dirs, bench_dir, tmp_path):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--model",
                str(model_dirs[0]),
                "--bench",
                str(bench_dir),
                "--out",
                str(out),
                "--shots",
                "0",
                "--splits",
                "heldout_instance",
                "--limit",
                "2",
                "--max-new-tokens",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    tasks = json.loads((out / "results.json").read_text())["models"]["base"]["scores"][
        "heldout_instance"
    ]["shots"]["0"]["tasks"]
    assert tasks["polarity"]["instances"] == 2
    assert (
        main(
            [
                "--model",
                str(model_dirs[0]),
                "--bench",
                str(bench_dir),
                "--out",
                str(out),
                "--splits",
                "nope",
                "--no-progress",
            ]
        )
        == 1
    )
    assert (
        main(
            [
                "--model",
                str(model_dirs[0]),
                "--name",
                "a",
                "--name",
                "b",
                "--bench",
                str(bench_dir),
                "--out",
                str(out),
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("shots", [0, 0]),
        ("shots", [-1]),
        ("length_norm", "mean"),
        ("generation_metric", "bleu"),
        ("limit", 0),
        ("max_new_tokens", 0),
        ("demo_source", "x"),
        ("dtype", "int8"),
    ],
)
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        EvalConfig(**{field: value}).validate()
