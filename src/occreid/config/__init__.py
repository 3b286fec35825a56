"""Typed configuration: YAML files + dotted overrides, validated with messages naming the bad key."""

from occreid.config.loader import (
    FEATURE_KEYS,
    apply_overrides,
    config_hash,
    feature_settings_diff,
    from_dict_config,
    load_config,
    save_config,
    to_dict,
)
from occreid.config.schema import Config

__all__ = [
    "Config",
    "apply_overrides",
    "FEATURE_KEYS",
    "config_hash",
    "feature_settings_diff",
    "from_dict_config",
    "load_config",
    "save_config",
    "to_dict",
]
