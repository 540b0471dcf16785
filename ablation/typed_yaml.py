"""Frozen dataclasses from plain data (parsed YAML), with type and range checks that name the key.

Generic machinery behind `ablation.config`: a field's type hint says what it accepts (int, float,
bool, str, Literal, Optional, tuple, dict, nested dataclass) and `field(metadata={"range": (lo, hi)})`
bounds it. Lists become tuples, so the result stays hashable and immutable.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

import yaml

from ablation.errors import UserError


def convert(value: Any, tp: Any, key: str, meta: dict[str, Any]) -> Any:
    """Check `value` against type `tp` and return it in that type (lists become tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], key, meta)
    if origin is Literal:
        if value not in args:
            raise UserError(f"config: {key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config: {key}: expected a list, got {type(value).__name__}")
        return tuple(convert(v, args[0], f"{key}[{i}]", meta) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config: {key}: expected a mapping, got {type(value).__name__}")
        return {str(k): convert(v, args[1], f"{key}.{k}", {}) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UserError(f"config: {key}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config: {key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config: {key}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config: {key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"config: {key}: expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise UserError(f"config: {key}: expected a string, got {value!r}")
    lo, hi = meta.get("range", (None, None))
    if lo is not None and value < lo:
        raise UserError(f"config: {key}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise UserError(f"config: {key}: {value!r} is above the maximum {hi}")
    return value


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            where = f"{prefix}." if prefix else ""
            raise UserError(f"config: unknown key {where}{key!r} (known: {', '.join(names)})")
    kwargs = {}
    for name, value in values.items():
        dotted = f"{prefix}.{name}" if prefix else name
        kwargs[name] = convert(value, hints[name], dotted, dict(names[name].metadata))
    return cls(**kwargs)


def merge(base: dict[str, Any], override: dict[str, Any], whole: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Deep-merge `override` into `base`; mappings under a key in `whole` are replaced, not merged."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in whole:
            out[key] = merge(out[key], value, whole)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`train.lr=1e-5` → {"train": {"lr": 1e-5}} (the value is parsed as YAML)."""
    if "=" not in text:
        raise UserError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw else ""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1}}` → `{"train.lr": 1}`; used for MLflow params."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def dump_yaml(cfg: Any) -> str:
    """A config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
