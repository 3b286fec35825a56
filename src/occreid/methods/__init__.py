"""Methods: each is one module with `Options`, `build_model`, `LossRecipe`, `distance` and `uses_labels`.

`METHODS` maps a method key to its module path; modules are imported only when used.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from occreid.config.typed import build
from occreid.errors import ConfigError

METHODS: dict[str, str] = {
    "bot": "occreid.methods.bot",
    "pcb": "occreid.methods.pcb",
    "amdnet": "occreid.methods.amdnet",
    "pan": "occreid.methods.pan",
    "ocnet": "occreid.methods.ocnet",
    "pabreid": "occreid.methods.pabreid",
    "sgsfa": "occreid.methods.sgsfa",
}


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise ConfigError(f"model.name: unknown method {name!r}; expected one of {sorted(METHODS)}")
    try:
        return importlib.import_module(METHODS[name])
    except ModuleNotFoundError as e:
        if e.name == METHODS[name]:
            raise ConfigError(f"model.name: method {name!r} is not implemented yet") from None
        raise


def validate_method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check `method.*` keys against the method's Options dataclass; return the full resolved dict."""
    module = get_method(name)
    opts = build(module.Options, options, "method")
    return dataclasses.asdict(opts)


def uses_labels(method: ModuleType, cfg: Any) -> bool:
    """Whether `method` trains with part labels under `cfg`: its `uses_labels(cfg)`; a method module
    without one uses them when its `label_grouping(cfg)` names a grouping. Without labels the training
    dataset opens no label file and ships no label map."""
    if hasattr(method, "uses_labels"):
        return bool(method.uses_labels(cfg))
    return hasattr(method, "label_grouping") and method.label_grouping(cfg) is not None
