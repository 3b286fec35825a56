"""ONNX export of a method's inference graph (its test embeddings and visibility), with the
preprocessing and matching recipe as metadata, an ONNX Runtime runner, and a PyTorch parity check.

The graph takes `image` [B, 3, H, W] (RGB, x / 255 then (x - mean) / std, at the training size) and
returns the tensors of `ModelOutput.features()` in a fixed order: named embeddings, then `parts`
[B, P, D] and `visibility` [B, P] when the method has them. Metadata keys (`occreid.*`, JSON values):
input_size [H, W], mean, std, color_order, scale, outputs, visibility_threshold, distance, method,
config_hash, checkpoint_sha256. Exported with the TorchScript-based exporter (`dynamo=False`), which
needs no onnxscript. Flip averaging is not part of the graph: run the mirror image yourself if wanted.

`tracker=True` exports what multi-object trackers expect of a ReID model instead: one input `images`
[B, 3, H, W] (same preprocessing) and one output `output` [B, D], the L2-normalised global embedding
(`ReidModel.global_key`); metadata adds `tracker_embedding` and `distance` becomes the cosine distance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from occreid.api import ReidModel
from occreid.errors import ConfigError

INPUT_NAME = "image"
TRACKER_INPUT, TRACKER_OUTPUT = "images", "output"
PARITY_TOLERANCE = 1e-4
#: operator name fragment -> the setting that exports instead (same weights, same features)
EXPORT_HINTS = {"fft": "AMD-Net's SIM exports with method.sim_dft=matmul (the default; same weights)"}


def require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'occreid[export]'") from None
    return onnx, onnxruntime


class InferenceGraph(nn.Module):
    """model(x).features() as a tuple in `names` order: the graph that gets exported."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model(x).features()
        return tuple(feats[n] for n in self.names)


class TrackerGraph(nn.Module):
    """model(x).features()[name], L2-normalised: the one-output graph a tracker's ReID backend calls."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model(x).features()[self.name], dim=1, eps=1e-12)


def output_names(reid: ReidModel) -> list[str]:
    """The feature names of the model, in `features()` order (embeddings, parts, visibility)."""
    h, w = reid.input_size
    with torch.no_grad():
        feats = reid.model(torch.zeros(2, 3, h, w, device=reid.device)).features()
    return list(feats)


def export_metadata(reid: ReidModel, names: list[str], tracker: bool = False) -> dict[str, Any]:
    from occreid.inference.identity import distance_recipe

    d = reid.cfg.data
    if tracker:
        return {
            "input_size": [int(d.height), int(d.width)], "mean": list(d.mean), "std": list(d.std),
            "color_order": "RGB", "scale": "x / 255, then (x - mean) / std per channel",
            "outputs": [TRACKER_OUTPUT], "tracker_embedding": reid.global_key,
            "distance": "cosine: 1 - dot(output_a, output_b) (outputs are unit vectors)",
            "method": reid.method, "config_hash": reid.config_hash,
            "checkpoint_sha256": reid.identity.get("checkpoint_sha256"),
        }
    return {
        "input_size": [int(d.height), int(d.width)], "mean": list(d.mean), "std": list(d.std),
        "color_order": "RGB", "scale": "x / 255, then (x - mean) / std per channel",
        "outputs": names,
        "visibility_threshold": reid.visibility_threshold if "visibility" in names else None,
        "distance": distance_recipe(reid.cfg), "method": reid.method, "config_hash": reid.config_hash,
        "checkpoint_sha256": reid.identity.get("checkpoint_sha256"),
    }


def export_onnx(reid: ReidModel, out: str | Path, opset: int = 17, dynamic_batch: bool = True,
                tracker: bool = False) -> Path:
    """Export, attach metadata, check with `onnx.checker`; returns the file path. Without
    `dynamic_batch` the graph takes batches of exactly one image; `tracker`: the tracker interface."""
    require_onnx()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [TRACKER_OUTPUT] if tracker else output_names(reid)
    input_name = TRACKER_INPUT if tracker else INPUT_NAME
    h, w = reid.input_size
    # eval() on the wrapper too: the exporter restores the wrapper's mode, recursively, afterwards
    graph = TrackerGraph(reid.model, reid.global_key) if tracker else InferenceGraph(reid.model, names)
    graph = graph.to("cpu").eval()
    axes = {n: {0: "batch"} for n in [input_name, *names]} if dynamic_batch else None
    try:
        with torch.no_grad():
            torch.onnx.export(
                graph, (torch.randn(2 if dynamic_batch else 1, 3, h, w),), str(out), input_names=[input_name],
                output_names=names, dynamic_axes=axes, opset_version=opset, dynamo=False,
            )
    except torch.onnx.OnnxExporterError as e:
        first = str(e).strip().splitlines()[0][:300]
        hints = "".join(f"; {hint}" for op, hint in EXPORT_HINTS.items() if op in first)
        raise ConfigError(f"method {reid.method}: its inference graph cannot be exported to ONNX opset "
                          f"{opset} ({type(e).__name__}: {first}){hints}") from e
    finally:
        reid.model.to(reid.device).eval()
    attach_metadata(out, export_metadata(reid, names, tracker))
    return out


def attach_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Write `occreid.<key>` = JSON(value) into the file's metadata_props (replacing old ones), check, save."""
    onnx, _ = require_onnx()
    proto = onnx.load(str(path))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key.removeprefix("occreid.") not in metadata]
    del proto.metadata_props[:]
    for key, value in [*keep, *((f"occreid.{k}", json.dumps(v)) for k, v in metadata.items())]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


class OnnxReidModel:
    """An exported model run with ONNX Runtime (CPU): `run(x)` -> name -> array, as `embed_tensor`."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        """`threads`: ONNX Runtime's intra-op threads (default: its own choice, one per physical core)."""
        _, ort = require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: ONNX file not found")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k.removeprefix("occreid."): json.loads(v) for k, v in props.items()
                         if k.startswith("occreid.")}
        if "input_size" not in self.metadata:
            raise ConfigError(f"{self.path}: no occreid metadata; export it with `occreid export`")
        self.input_size = tuple(self.metadata["input_size"])
        self.input_name = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        x = exported_input(x, self.input_size, self.path)
        outs = self.session.run(None, {self.input_name: x})
        return dict(zip(self.names, outs))


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on one batch: max |diff| of L2-normalised embeddings per output, visibility
    decisions that differ away from the threshold (`flips`) and scores within tolerance of it (counted)."""

    max_abs_diff: dict[str, float]
    visibility_flips: int
    near_threshold: int
    tolerance: float = PARITY_TOLERANCE

    @property
    def ok(self) -> bool:
        return self.visibility_flips == 0 and all(v <= self.tolerance for v in self.max_abs_diff.values())


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def parity(reid: ReidModel, runner: Any, x: torch.Tensor,
           tolerance: float = PARITY_TOLERANCE) -> ParityReport:
    """Compare one preprocessed batch through PyTorch (single pass, no flip) and an exported model
    (`runner.run(x)` -> name -> array: ONNX Runtime, OpenVINO; a tracker file against `global_key`)."""
    with torch.no_grad():
        ref = {k: v.float().cpu().numpy() for k, v in reid.model(x.to(reid.device)).features().items()}
    if "tracker_embedding" in getattr(runner, "metadata", {}):
        ref = {TRACKER_OUTPUT: ref[runner.metadata["tracker_embedding"]]}
    got = runner.run(x)
    if set(ref) != set(got):
        raise ConfigError(f"ONNX outputs {sorted(got)} differ from the model's {sorted(ref)}")
    diffs = {k: float(np.abs(_unit(ref[k]) - _unit(got[k])).max()) for k in ref if k != "visibility"}
    flips = near = 0
    if "visibility" in ref:
        t = reid.visibility_threshold
        r, o = ref["visibility"], got["visibility"]
        band = (np.abs(r - t) <= tolerance) | (np.abs(o - t) <= tolerance)
        differ = (r > t) != (o > t)
        flips, near = int((differ & ~band).sum()), int(band.sum())
        diffs["visibility"] = float(np.abs(r - o).max())
    return ParityReport(diffs, flips, near, tolerance)


def exported_input(x: np.ndarray | torch.Tensor, input_size: tuple[int, int], path: Any) -> np.ndarray:
    """A batch as the contiguous float32 [B, 3, H, W] array an exported model takes; a ConfigError naming
    the file and the size to resize to when the shape does not match."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    h, w = input_size
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
        raise ConfigError(f"input of shape {tuple(x.shape)} does not match the exported input "
                          f"[B, 3, {h}, {w}] of {path}; resize to {h} x {w} (metadata input_size)")
    return np.ascontiguousarray(x, dtype=np.float32)
