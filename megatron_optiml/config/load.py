"""Load a NeMo-layout YAML recipe (+ ``key=value`` overrides) strictly into ``RunConfig``."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from megatron_optiml.config.schema import RunConfig


class ConfigError(ValueError):
    """A recipe key or value that does not fit the schema (names the file and dotted key)."""


def _parse_scalar(text: str) -> Any:
    # YAML's scalar rules: 1e-5 -> float, true -> bool, null -> None, [0.9, 0.95] -> list.
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Hydra-style ``a.b.c=value`` overrides; ``++a.b=value`` may add a key."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. trainer.max_steps=100)")
        key, value = item.split("=", 1)
        key = key.lstrip("+")
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = _parse_scalar(value)
    return tree


def _convert(cls_or_type, value, path: str, source: str):
    origin = typing.get_origin(cls_or_type)
    if dataclasses.is_dataclass(cls_or_type):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {path or '<root>'} must be a mapping, got {value!r}")
        hints = typing.get_type_hints(cls_or_type)
        fields = {f.name for f in dataclasses.fields(cls_or_type)}
        unknown = sorted(set(value) - fields)
        if unknown:
            where = f"{path}." if path else ""
            raise ConfigError(
                f"{source}: unknown key {where}{unknown[0]} (known under {path or '<root>'}: "
                f"{', '.join(sorted(fields))})"
            )
        kwargs = {
            k: _convert(hints[k], v, f"{path}.{k}" if path else k, source) for k, v in value.items()
        }
        return cls_or_type(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(cls_or_type)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path, source)
    if origin is typing.Literal:
        choices = typing.get_args(cls_or_type)
        if value not in choices:
            raise ConfigError(f"{source}: {path}={value!r}: expected one of {list(choices)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {path}={value!r}: expected a list")
        return tuple(float(v) for v in value)
    if cls_or_type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {path}={value!r}: expected true or false")
        return value
    if cls_or_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {path}={value!r}: expected an integer")
        return value
    if cls_or_type is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-5" (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {path}={value!r}: expected a number")
        return float(value)
    if cls_or_type is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{source}: {path}={value!r}: expected a string")
        return str(value)
    return value


def config_from_dict(tree: dict, source: str = "<dict>") -> RunConfig:
    return _convert(RunConfig, tree, "", source)


def load_run_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    validate: bool = True,
) -> RunConfig:
    """Read a YAML recipe, apply overrides, build the typed config and validate it."""
    tree: dict = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read recipe: {e.strerror}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping at the top level")
    tree = apply_overrides(tree, overrides)
    cfg = config_from_dict(tree, source)
    if validate:
        try:
            cfg.validate()
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    return cfg


def config_to_dict(cfg: RunConfig) -> dict:
    def conv(v):
        if isinstance(v, tuple):
            return list(v)
        return v

    return {k: conv(v) for k, v in dataclasses.asdict(cfg).items()} | {
        "model": _tuples_to_lists(dataclasses.asdict(cfg.model))
    }


def _tuples_to_lists(d):
    if isinstance(d, dict):
        return {k: _tuples_to_lists(v) for k, v in d.items()}
    if isinstance(d, tuple | list):
        return [_tuples_to_lists(v) for v in d]
    return d
