"""Megatron-LM-shaped checkpoint roots: tracker file, iteration folders, model save/load, meta."""

from megatron_optiml.checkpointing.layout import (
    META_FILE,
    TRACKER_FILE,
    iteration_dir,
    read_meta,
    read_tracker,
    resolve_iteration_dir,
    write_meta,
    write_tracker,
)
from megatron_optiml.checkpointing.model import load_model_checkpoint, save_model_checkpoint

__all__ = [
    "META_FILE",
    "TRACKER_FILE",
    "iteration_dir",
    "load_model_checkpoint",
    "read_meta",
    "read_tracker",
    "resolve_iteration_dir",
    "save_model_checkpoint",
    "write_meta",
    "write_tracker",
]
