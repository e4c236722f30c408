"""``optiml-train`` that dies hard after a given step, for kill-and-resume checks: run it where
``train.py`` would run, with ``--crash-after-step N`` before the usual arguments::

    torchrun --nproc_per_node 2 -m megatron_optiml.testing.crashing_train \
        --crash-after-step 15 --config examples/recipes/opt_debug_cpu.yaml key=value ...

Every rank trains as ``optiml-train`` does and exits with code 17 right after step N (after
that step's periodic checkpoint), through the trainer's ``on_step_end`` callbacks: the
production loop has no fault hook of its own.
"""

from __future__ import annotations

import argparse
import sys

from megatron_optiml.testing.faults import exit_after_step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crashing_train",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
        add_help=False,  # --help goes on to optiml-train's parser
    )
    parser.add_argument("--crash-after-step", type=int, required=True, metavar="N")
    args, train_argv = parser.parse_known_args(argv)
    from megatron_optiml.cli.train import main as train_main

    return train_main(train_argv, on_step_end=[exit_after_step(args.crash_after_step)])


if __name__ == "__main__":
    sys.exit(main())
