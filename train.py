"""Thin entry point: ``torchrun --nproc_per_node 2 train.py --config examples/recipes/opt_debug_cpu.yaml``."""

import sys

from megatron_optiml.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
