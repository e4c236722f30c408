"""Checkpoint conversion: HF OPT / metaseq <-> canonical unsharded state dict <-> TP/PP shards."""
