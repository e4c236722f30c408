"""``python -m checkpoints_conversion``."""

import sys

from checkpoints_conversion.cli import main

if __name__ == "__main__":
    sys.exit(main())
