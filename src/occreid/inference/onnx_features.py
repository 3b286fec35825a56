"""Feature extraction through ONNX Runtime (`--runtime onnx` of `occreid eval` / `occreid extract`).

The model is exported to a temporary ONNX file, loaded into an ONNX Runtime CPU session, and checked
against PyTorch on the first batch it sees (`export_onnx.parity`): a mismatch stops the run with
ConfigError instead of producing wrong features. Needs the `export` extra (onnx, onnxruntime).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from occreid.api import ReidModel
from occreid.errors import ConfigError

RUNTIMES = ("torch", "onnx")


class OnnxFeatures:
    """images [B, 3, H, W] -> name -> float32 tensor, as `model(x).features()`, run by ONNX Runtime."""

    def __init__(self, reid: ReidModel, threads: int | None = None) -> None:
        from occreid.inference.export_onnx import OnnxReidModel, export_onnx, require_onnx

        require_onnx()  # ConfigError naming the extra before any export work
        self.reid = reid
        with tempfile.TemporaryDirectory(prefix="occreid-onnx-") as tmp:
            self.runner = OnnxReidModel(export_onnx(reid, Path(tmp) / "model.onnx"), threads=threads)
        self.parity = None

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.parity is None:
            self.check(images)
        return {k: torch.from_numpy(v) for k, v in self.runner.run(images.float().cpu()).items()}

    def check(self, images: torch.Tensor) -> None:
        """Compare ONNX Runtime with PyTorch on `images`; ConfigError when they disagree."""
        from occreid.inference.export_onnx import parity

        report = parity(self.reid, self.runner, images.float().cpu())
        if not report.ok:
            raise ConfigError(
                f"--runtime onnx: ONNX Runtime disagrees with PyTorch on the first batch ({self.reid.method}: "
                f"max |diff| {report.max_abs_diff}, {report.visibility_flips} visibility flips; tolerance "
                f"{report.tolerance}); use --runtime torch"
            )
        self.parity = report


class OnnxEmbedder:
    """A ReidModel whose `embed_tensor` runs through ONNX Runtime; every other attribute (preprocess,
    identity, config_hash, flip, ...) is the wrapped model's, so feature folders record the same identity."""

    def __init__(self, reid: ReidModel, threads: int | None = None) -> None:
        self.reid = reid
        self.features = OnnxFeatures(reid, threads=threads)

    def __getattr__(self, name: str):
        return getattr(self.reid, name)

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        from occreid.engine.extract import flip_merge

        h, w = self.reid.input_size
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
            raise ConfigError(f"input tensor of shape {tuple(x.shape)} does not match the model input "
                              f"[B, 3, {h}, {w}]")
        feats = self.features(x)
        if self.reid.flip:
            mirrored = self.features(torch.flip(x, dims=[3]))
            feats = {k: flip_merge(k, v, mirrored[k]) for k, v in feats.items()}
        return {k: v.float().numpy() for k, v in feats.items()}


def check_runtime(runtime: str) -> None:
    """ConfigError for an unknown runtime name, or for `onnx` without the `export` extra."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    if runtime == "onnx":
        from occreid.inference.export_onnx import require_onnx

        require_onnx()


def onnx_forward(model: torch.nn.Module, cfg, checkpoint: Path) -> OnnxFeatures:
    """The ONNX Runtime forward of an evaluation model (moved to the CPU, where ONNX Runtime runs)."""
    from occreid.inference.identity import file_sha256, model_identity

    identity = model_identity(cfg, checkpoint, file_sha256(checkpoint))
    return OnnxFeatures(ReidModel(model, cfg, identity=identity, device="cpu", flip=False))
