"""The one strict YAML loader of typed configs (the run recipe, data_prep's bench config): read the
file, apply ``a.b.c=value`` overrides, convert into ``kw_only`` dataclasses, validate.

Every error names the file, the dotted key, the value and the reason; an unknown key also gets
the closest known one ("did you mean"). The conversion is our own rather than OmegaConf's
structured configs (a dependency): OmegaConf turns ``1`` and ``'yes'`` into ``True`` and ``3``
into ``'3'`` without a word, and its errors name neither the file nor the line. No torch or
Megatron import here: data_prep loads its config through this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

PARSE = "parse"
"""``dataclasses.field(metadata={PARSE: fn})``: the field's value is ``fn(raw value)`` instead of
the type-driven conversion; ``fn`` raises ``ValueError`` (its ``reason`` attribute, else its
text, is the reason given)."""


class ConfigError(ValueError):
    """A config key or value that does not fit its schema (names the file and the dotted key)."""


@dataclasses.dataclass(frozen=True)
class _Override:
    """An override's value as YAML reads it, and its text: a string field takes the text
    (``exp_manager.name=2024`` is the name '2024', not an error)."""

    text: str
    value: Any


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file (an empty file is ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = "; ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {_kind(tree)}")
    return tree


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Hydra-style ``a.b.c=value`` overrides (``++a.b=value`` is accepted too), applied in place;
    values are read as YAML scalars (``1e-5``, ``true``, ``null``, ``[0.9, 0.95]``)."""
    return _apply(tree, overrides, keep_text=False)


def _apply(tree: dict, overrides: Sequence[str], *, keep_text: bool) -> dict:
    for item in overrides:
        key, eq, text = item.partition("=")
        key = key.lstrip("+")
        if not eq or not key or any(not p for p in key.split(".")):
            raise ConfigError(
                f"override {item!r}: expected key=value with a dotted key "
                "(e.g. trainer.max_steps=100)"
            )
        parts = key.split(".")
        node = tree
        for i, p in enumerate(parts[:-1]):
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {item!r}: {where} is not a section")
            node = node[p]
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text  # e.g. "a: b" -- only a string field can take it
        node[parts[-1]] = _Override(text, value) if keep_text else value
    return tree


def build_typed(
    cls: type[T],
    tree: Any,
    source: str = "<dict>",
    *,
    validate: bool = True,
    finish: Callable[[T], None] | None = None,
) -> T:
    """``cls`` from plain data, strictly (unknown keys, missing required keys and wrong types are
    errors), then ``finish(cfg)`` (e.g. resolve relative paths) and ``cfg.validate()``.
    ``source`` (the file) starts every message."""
    cfg = _convert(cls, tree, "", source)
    if finish is not None:
        finish(cfg)
    if validate:
        try:
            cfg.validate()
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    return cfg


def load_typed(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    validate: bool = True,
    finish: Callable[[T], None] | None = None,
) -> T:
    """Read ``path`` (none: start from the defaults), apply ``overrides``, then
    :func:`build_typed`."""
    tree = read_yaml(path) if path is not None else {}
    tree = _apply(tree, overrides, keep_text=True)
    source = str(path) if path is not None else "<overrides>"
    return build_typed(cls, tree, source, validate=validate, finish=finish)


def to_tree(cfg: Any) -> dict:
    """A typed config back to plain YAML data (tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


# ---------------------------------------------------------------- conversion


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def _plain(value: Any) -> Any:
    """``value`` without override markers (for messages)."""
    if isinstance(value, _Override):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _bad(source: str, key: str, value: Any, reason: str) -> ConfigError:
    return ConfigError(f"{source}: {key}={_plain(value)!r}: {reason}")


def _accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)


def _build(cls: type, value: Any, key: str, source: str) -> Any:
    if value is None:
        value = {}  # `section:` with nothing under it
    if not isinstance(value, dict):
        if not key:
            raise ConfigError(f"{source}: expected a mapping at the top level, got {_kind(value)}")
        raise _bad(source, key, value, f"expected a mapping (the {cls.__name__} section)")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in value:
        if name not in fields:
            near = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean {_join(key, near[0])}?" if near else ""
            raise ConfigError(
                f"{source}: unknown key {_join(key, name)}{hint} "
                f"(known under {key or 'the top level'}: {', '.join(sorted(fields))})"
            )
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in value:
            raise ConfigError(f"{source}: missing key {_join(key, name)} (required)")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, raw in value.items():
        dotted = _join(key, name)
        parse = fields[name].metadata.get(PARSE)
        if parse is None:
            kwargs[name] = _convert(hints[name], raw, dotted, source)
            continue
        raw = raw.value if isinstance(raw, _Override) else raw
        try:
            kwargs[name] = parse(raw)
        except ValueError as e:
            raise _bad(source, dotted, raw, getattr(e, "reason", str(e))) from None
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    if isinstance(value, _Override):
        scalar = not isinstance(value.value, str | dict | list) and value.value is not None
        value = value.text if scalar and _accepts_str(tp) else value.value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _bad(source, key, value, f"expected {_describe(tp)}")
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, key, source)
        for a in inner:
            try:
                return _convert(a, value, key, source)
            except ConfigError:
                pass
        raise _bad(source, key, value, f"expected {_describe(tp)}")
    if origin is typing.Literal:
        if isinstance(value, bool) or value not in args:
            raise _bad(source, key, value, f"expected one of {list(args)}")
        return value
    if origin is list or origin is tuple:
        if not isinstance(value, list | tuple):
            raise _bad(source, key, value, "expected a list")
        if origin is list or args[-1] is Ellipsis:
            items = [args[0]] * len(value)
        else:
            items = list(args)
            if len(value) != len(items):
                raise _bad(source, key, value, f"expected a list of {len(items)} values")
        out = [_convert(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(items, value))]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(source, key, value, "expected a mapping")
        return {str(k): _convert(args[1], v, _join(key, k), source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(source, key, value, "expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(source, key, value, "expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads 1e-5 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(source, key, value, "expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _bad(source, key, value, "expected a string")
        return value
    return value


def _describe(tp: Any) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    parts = []
    for a in typing.get_args(tp) or (tp,):
        if a is type(None):
            parts.append("null")
        elif typing.get_origin(a) is typing.Literal:
            parts.append(f"one of {list(typing.get_args(a))}")
        elif dataclasses.is_dataclass(a) or typing.get_origin(a) is dict:
            parts.append("a mapping")
        elif typing.get_origin(a) in (list, tuple):
            parts.append("a list")
        else:
            parts.append(words.get(a, getattr(a, "__name__", str(a))))
    return " or ".join(parts)
