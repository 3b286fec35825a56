"""Typed configuration: YAML files + dotted overrides, validated with messages naming the bad key."""

from occreid.config.loader import (
    apply_overrides,
    config_hash,
    from_dict_config,
    load_config,
    save_config,
    to_dict,
)
from occreid.config.schema import Config

__all__ = [
    "Config",
    "apply_overrides",
    "config_hash",
    "from_dict_config",
    "load_config",
    "save_config",
    "to_dict",
]
