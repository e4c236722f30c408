"""optiml-evaluate: score HF model folders on a data_prep build (paper §4.1) and write
results.json, report.md (tables per split, category, benchmark, task), categories.png
(models compared by category) and contamination.json into --out.

Example (CPU demo scale):
    optiml-evaluate --model outputs/hf_base --model outputs/hf_tuned \\
        --bench outputs/bench --out outputs/eval --limit 20 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from megatron_optiml.eval.config import (
    DEMO_SOURCES,
    DTYPES,
    GENERATION_METRICS,
    LENGTH_NORMS,
    EvalConfig,
)
from megatron_optiml.eval.runner import evaluate_bench


def build_parser() -> argparse.ArgumentParser:
    d = EvalConfig()
    p = argparse.ArgumentParser(
        prog="optiml-evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        help="HF model folder (repeat to compare models)",
    )
    p.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="display name per --model, in the same order (default: folder names)",
    )
    p.add_argument("--bench", required=True, help="output folder of optiml-prepare")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--splits", nargs="+", default=d.splits, help="evaluation splits")
    p.add_argument("--shots", nargs="+", type=int, default=d.shots, help="demonstration counts")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--length-norm", choices=LENGTH_NORMS, default=d.length_norm)
    p.add_argument("--score-eos", action="store_true", help="score the </s> after each option")
    p.add_argument(
        "--prepend-bos",
        action="store_true",
        help="put BOS (</s>) before each prompt, as lm-evaluation-harness / HF's OPT tokenizer "
        "do (default: none, as OPT-IML was trained)",
    )
    p.add_argument("--generation-metric", choices=GENERATION_METRICS, default=d.generation_metric)
    p.add_argument("--demo-source", choices=DEMO_SOURCES, default=d.demo_source)
    p.add_argument(
        "--delimiter", default=d.delimiter, help="prompt/answer delimiter (\\n for a newline)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="demonstration draw seed")
    p.add_argument("--limit", type=int, help="at most N instances per task")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="generation batch")
    p.add_argument("--max-positions", type=int, help="context length (default: the model's)")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype)
    p.add_argument("--device", help="torch device (default cuda if available)")
    p.add_argument("--predictions", action="store_true", help="write per-instance predictions")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("optiml-evaluate")
    logging.getLogger("megatron").setLevel(logging.WARNING)  # per-file index-reader chatter
    cfg = EvalConfig(
        splits=args.splits,
        shots=args.shots,
        max_new_tokens=args.max_new_tokens,
        length_norm=args.length_norm,
        score_eos=args.score_eos,
        prepend_bos=args.prepend_bos,
        generation_metric=args.generation_metric,
        delimiter=args.delimiter.replace("\\n", "\n"),  # "\nAnswer:" typed in a shell
        demo_source=args.demo_source,
        seed=args.seed,
        limit=args.limit,
        batch_size=args.batch_size,
        max_positions=args.max_positions,
        dtype=args.dtype,
        device=args.device,
        predictions=args.predictions,
        progress=not args.no_progress,
    )
    models: dict[str, str] | list[str] = list(args.model)
    if args.name:
        if len(args.name) != len(args.model) or len(set(args.name)) != len(args.name):
            log.error("--name: give one distinct name per --model (%d models)", len(args.model))
            return 2
        models = dict(zip(args.name, args.model))
    try:
        cfg.validate()
        evaluate_bench(models, args.bench, args.out, cfg)
    except (ValueError, FileNotFoundError, OSError) as e:
        log.error("%s", e)
        return 1
    out = Path(args.out)
    # The tables are this command's product (stdout, pipeable), not a log line.
    sys.stdout.write((out / "report.md").read_text(encoding="utf-8"))
    log.info("wrote %s/{results.json,report.md,categories.png,contamination.json}", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
