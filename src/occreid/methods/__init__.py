"""Methods: each is one module with `Options`, `build_model`, `LossRecipe` and `distance`.

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
