"""Load a NeMo-layout YAML recipe (+ ``key=value`` overrides) strictly into ``RunConfig``, through
the shared strict loader (``config/yaml_loader.py``, also data_prep's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from megatron_optiml.config.schema import RunConfig
from megatron_optiml.config.yaml_loader import (
    ConfigError,
    apply_overrides,
    build_typed,
    load_typed,
    to_tree,
)

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_run_config",
]


def config_from_dict(tree: dict, source: str = "<dict>") -> RunConfig:
    """``RunConfig`` from plain data, strictly; not validated (call ``validate()``)."""
    return build_typed(RunConfig, tree, source, validate=False)


def load_run_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    validate: bool = True,
) -> RunConfig:
    """Read a YAML recipe, apply overrides, build the typed config and validate it."""
    return load_typed(RunConfig, path, overrides, validate=validate)


def config_to_dict(cfg: RunConfig) -> dict:
    """The recipe a ``RunConfig`` loads back from (tuples as lists)."""
    return to_tree(cfg)
