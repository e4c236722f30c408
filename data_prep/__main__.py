"""`python -m data_prep` runs the `optiml-prepare` CLI."""

from data_prep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
