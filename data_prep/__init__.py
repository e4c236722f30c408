"""OPT-IML Bench builder: readers, splits, rendering, tokenization and blends (library + CLI)."""
