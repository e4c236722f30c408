"""`optiml-prepare`: build the OPT-IML Bench (splits, indexed datasets, blend) from a config."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.config import load_config
from data_prep.errors import DataError
from data_prep.pipeline import build_bench
from megatron_optiml.utils.disk import no_space_error, no_space_message


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="optiml-prepare", description=__doc__)
    p.add_argument(
        "--config",
        required=True,
        help="bench config YAML (e.g. examples/data_prep/bench_config.yaml)",
    )
    p.add_argument(
        "--out", required=True, help="output folder (replaced if it holds an earlier build)"
    )
    p.add_argument("--workers", type=int, help="worker processes (overrides tokenize.workers)")
    p.add_argument(
        "--leak-policy", choices=["error", "report", "drop"], help="overrides leak.policy"
    )
    p.add_argument("--seed", type=int, help="overrides seed and splits.seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides by dotted key, e.g. render.max_seq_length=1024 (checked like"
        " the file: unknown keys and wrong types name the key)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("optiml-prepare")
    try:
        cfg = load_config(args.config, args.overrides)
        if args.workers is not None:
            cfg.tokenize.workers = args.workers
        if args.leak_policy is not None:
            cfg.leak.policy = args.leak_policy
        if args.seed is not None:
            cfg.seed = cfg.splits.seed = args.seed
        cfg.validate()
        build_bench(cfg, args.out, progress=not args.no_progress)
    except (DataError, ValueError, FileExistsError) as e:
        log.error("%s", e)
        return 1
    except OSError as e:
        # build_bench already removed <out>.partial; an earlier build in --out is untouched.
        full = no_space_error(e)
        out = Path(args.out).resolve()
        log.error("%s", no_space_message(full, f"{out}.partial") if full else e)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
