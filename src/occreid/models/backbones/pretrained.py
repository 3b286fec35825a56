"""Reading ImageNet checkpoint files and copying them into a backbone, with a report of what matched."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from occreid.errors import CheckpointError

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model")
"""Keys under which training scripts nest the weights ({'state_dict': ...}, {'model': ...})."""

MODULE_PREFIX = "module."
"""Prefix that DataParallel / DistributedDataParallel add to every key."""

PACKAGED = "imagenet"
"""The `model.pretrained_path` value that selects the backbone's packaged ImageNet file."""


@dataclass(frozen=True)
class PackagedWeights:
    """An ImageNet weight file that a registry package ships: found by `importlib`, checked by sha256.

    Only the package's files are read (its `__init__` is not imported), so nothing is downloaded.
    """

    package: str
    resource: str
    sha256: str
    extra: str
    description: str

    def _locations(self) -> list[str]:
        spec = importlib.util.find_spec(self.package)
        return list(spec.submodule_search_locations or []) if spec else []

    def available(self) -> bool:
        """Whether the package that ships the file is installed (its `__init__` is not imported)."""
        return bool(self._locations())

    def path(self) -> Path:
        """The file on disk; CheckpointError naming the extra to install when it is absent or altered."""
        locations = self._locations()
        if not locations:
            raise CheckpointError(
                f"model.pretrained_path=imagenet needs the {self.package} package: "
                f"pip install 'occreid[{self.extra}]'"
            )
        path = Path(locations[0]) / self.resource
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing from the installed {self.package}: reinstall it with "
                f"pip install --force-reinstall 'occreid[{self.extra}]'"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise CheckpointError(
                f"{path} has sha256 {digest[:12]}..., not the expected {self.sha256[:12]}...: "
                f"reinstall with pip install --force-reinstall 'occreid[{self.extra}]'"
            )
        return path


@dataclass
class LoadReport:
    """What `load_pretrained` did with each key of a checkpoint.

    loaded: keys copied into the model. missing: model keys the file lacks (BatchNorm
    `num_batches_tracked` counters are not listed: old torchvision files have none).
    unexpected: file keys the model does not have. ignored: classifier-head keys dropped on purpose.
    mismatched: (key, shape in file, shape in model), left at their initial value.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every model tensor came from the file and nothing in it went unused by mistake."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [
            f"pretrained weights from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape-mismatched, {len(self.ignored)} classifier keys ignored"
        ]
        lines += _listing("missing (kept at initialisation)", self.missing)
        lines += _listing("unexpected (not used)", self.unexpected)
        lines += _listing(
            "shape mismatch (kept at initialisation)",
            [f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched],
        )
        lines += _listing("ignored classifier head", _prefix_summary(self.ignored))
        return "\n".join(lines)


def _listing(title: str, items: list[str], limit: int = 12) -> list[str]:
    if not items:
        return []
    shown = [f"    {item}" for item in items[:limit]]
    if len(items) > limit:
        shown.append(f"    ... and {len(items) - limit} more")
    return [f"  {title}:", *shown]


def _prefix_summary(keys: list[str]) -> list[str]:
    """Collapse keys to their top-level module with a count, e.g. 'fc (2 tensors)'."""
    counts: dict[str, int] = {}
    for key in keys:
        top = key.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return [f"{top} ({n} tensors)" for top, n in counts.items()]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat name -> tensor dict.

    Unwraps {'state_dict': ...} / {'model': ...} and strips 'module.' prefixes; `.safetensors`
    files (timm's hub format) are read when the `safetensors` package is installed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"pretrained checkpoint not found: {path}. Set `model.pretrained_path` to an existing "
            "ImageNet weight file, or leave it empty to train from scratch."
        )
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError(
                f"{path} is a .safetensors file but the `safetensors` package is not installed: "
                "`pip install safetensors`, or use the .pth/.bin version of the weights."
            ) from exc
        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for unreadable files
            raise CheckpointError(
                f"cannot read checkpoint {path}: {exc}. Check that `model.pretrained_path` points "
                "to a PyTorch weight file (.pth / .pth.tar / .bin)."
            ) from exc
    return _flatten(obj, path)


def _flatten(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        nested = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict: save the weights "
            "with torch.save(model.state_dict(), path)."
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = str(key)
        while name.startswith(MODULE_PREFIX):
            name = name[len(MODULE_PREFIX) :]
        state[name] = value
    return state


def copy_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    ignored_prefixes: Iterable[str] = (),
    strict: bool = False,
) -> LoadReport:
    """Copy matching tensors of `state` into `module` in place and report every key's fate.

    A file matching nothing raises CheckpointError (wrong file for this backbone); with `strict`,
    so does any missing, unexpected or mismatched key. Nothing is copied when an error is raised.
    """
    prefixes = tuple(p.rstrip(".") + "." for p in ignored_prefixes)
    target = module.state_dict(keep_vars=True)
    report = LoadReport(source=source)
    to_copy: list[tuple[torch.Tensor, torch.Tensor]] = []
    for key, value in state.items():
        if key.startswith(prefixes):
            report.ignored.append(key)
        elif key not in target:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(target[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            report.loaded.append(key)
            to_copy.append((target[key], value))
    report.missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if not report.loaded:
        raise CheckpointError(
            f"no tensor of {source} matches {type(module).__name__} (first keys in the file: "
            f"{list(state)[:5]}): is `model.pretrained_path` the checkpoint of this backbone?"
        )
    if strict and not report.complete:
        raise CheckpointError(f"strict loading failed for {type(module).__name__}:\n{report}")
    with torch.no_grad():
        for dst, src in to_copy:
            dst.copy_(src.to(dtype=dst.dtype))
    if report.complete:
        logger.info("%s", report)
    else:
        logger.warning("%s", report)
    return report
