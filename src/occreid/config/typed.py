"""Build dataclasses from plain dicts with type checks; errors name the dotted key and allowed values."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from occreid.config.ranges import Range
from occreid.errors import ConfigError


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Annotated:
        return _type_name(get_args(tp)[0])
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _choice(tp: Any) -> str:
    """An alternative of a union in words: a Literal's values as written in YAML ('auto'), else the type."""
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    return _type_name(tp)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to type `tp` (and inside its declared Range), or raise ConfigError
    naming `key`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *extras = get_args(tp)
        value = coerce(value, base, key)
        for extra in extras:
            if isinstance(extra, Range):
                extra.check(value, key)
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message (e.g. its range) is the clearest
            try:
                return coerce(value, options[0], key)
            except ConfigError as e:
                raise ConfigError(f"{e} (or null)") from None
        errors = []
        for a in options:
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        out_of_range = [i for i, e in enumerate(errors) if " is out of range; expected " in e]
        if len(out_of_range) == 1:  # the right type outside its range: say the range, then the other choices
            others = [_choice(a) for i, a in enumerate(options) if i != out_of_range[0]]
            others += ["null"] if type(None) in args else []
            raise ConfigError(f"{errors[out_of_range[0]]} (or {' or '.join(others)})")
        raise ConfigError(f"{key}: {value!r} is not a valid {' or '.join(_type_name(a) for a in args)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; expected one of {list(allowed)}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            if isinstance(value, (str, int, float)) and item_tp is not Any:
                value = [value]
            else:
                raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping; unknown keys are errors listing the known ones."""
    where = prefix or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)  # extras: the Range of Annotated fields
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown key {key!r}; known keys here: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)
