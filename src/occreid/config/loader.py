"""Load YAML configs (with `_base_` inheritance), apply `a.b=value` overrides, validate, save."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from occreid.config.schema import Config
from occreid.config.typed import build
from occreid.errors import ConfigError


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML config, resolving `_base_: other.yaml` (relative to the file) recursively."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: `_base_` cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: dict = {}
    for b in bases:
        merged = _merge(merged, read_yaml(path.parent / b, _seen + (path.resolve(),)))
    return _merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML: numbers, lists, true/false, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key component")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def from_dict_config(data: dict) -> Config:
    """Validate a plain dict (e.g. the config stored in a checkpoint)."""
    cfg = build(Config, data)
    from occreid.methods import validate_method_options

    cfg.method = validate_method_options(cfg.model.name, cfg.method)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or defaults), apply overrides, validate every key."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict_config(data)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


_MISSING = object()


def _changed(values: dict, defaults: dict) -> dict:
    """The entries of `values` that differ from `defaults` (nested sections compared key by key)."""
    out = {}
    for k, v in values.items():
        d = defaults.get(k, _MISSING)
        if isinstance(v, dict) and isinstance(d, dict) and v and d:
            sub = _changed(v, d)
            if sub:
                out[k] = sub
        elif v != d:
            out[k] = v
    return out


def config_hash(cfg: Config) -> str:
    """Short stable hash of the settings that differ from the defaults (reports and features cite it).
    Settings at their default are left out, so a key added to the schema later (with a default) does
    not change the hash of a config saved before it existed."""
    from occreid.methods import validate_method_options

    defaults = to_dict(Config())
    defaults["method"] = validate_method_options(cfg.model.name, {})  # the method's Options defaults
    blob = json.dumps(_changed(to_dict(cfg), defaults), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# The settings that decide what a checkpoint's features are (input size and normalisation, the
# architecture, the method's options, flip at test; not model.pretrained_path: the checkpoint's weights
# replace the initial ones). Two extractions with one checkpoint file that agree on these give
# the same features, whatever their other settings (paths, workers, batch sizes, training recipe).
FEATURE_KEYS = ("data.height", "data.width", "data.mean", "data.std", "model.name", "model.backbone",
                "model.last_stride", "model.backbone_options", "method", "eval.flip")


def flat_dict(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dotted key: value}; a non-empty section is descended into."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def feature_settings_diff(a: dict, b: dict) -> list[str]:
    """Dotted feature-relevant keys (`FEATURE_KEYS`) whose values differ between two config dicts (as
    stored with features), as 'key: A vs B' in `FEATURE_KEYS` order. Each side is first completed with
    today's defaults, so a key that one side predates is compared at its default."""
    fa, fb = flat_dict(_completed(a)), flat_dict(_completed(b))

    def rank(key: str) -> int | None:
        return next((i for i, f in enumerate(FEATURE_KEYS) if key == f or key.startswith(f + ".")), None)

    keys = sorted((rank(k), k) for k in set(fa) | set(fb) if rank(k) is not None and fa.get(k) != fb.get(k))
    return [f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for _, k in keys]


def _completed(data: dict) -> dict:
    """`data` validated and completed with the defaults; as given if it no longer validates."""
    try:
        return to_dict(from_dict_config(copy.deepcopy(data)))
    except ConfigError:
        return data
