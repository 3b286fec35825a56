"""INT8 ONNX by ONNX Runtime static quantization (QDQ format, per-channel int8 weights, uint8 activations),
calibrated on a few hundred preprocessed crops from an image folder (e.g. a training split). The file keeps
the occreid metadata and adds `quantization` (method, calibration folder and image count)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occreid.api import ReidModel
from occreid.errors import ConfigError, DatasetError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def calibration_images(folder: str | Path, count: int = 300, seed: int = 0) -> list[Path]:
    """`count` images drawn at random (seeded) from `folder` (recursive, sorted first); all if fewer."""
    from occreid.inference.extract_folder import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--calib {folder}: not a folder; give a folder of training crops "
                           "(e.g. DATA/Occluded_Duke/bounding_box_train)")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise DatasetError(f"--calib {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
    return sorted(random.Random(seed).sample(paths, min(count, len(paths))))


def crop_batches(reid: ReidModel, paths: list[Path], batch_size: int = 16) -> list[np.ndarray]:
    """The crops preprocessed as at test time (`ReidModel.to_tensor`), in float32 batches [B, 3, H, W]."""
    tensors = [reid.to_tensor(p) for p in paths]
    return [torch.stack(tensors[s:s + batch_size]).numpy() for s in range(0, len(tensors), batch_size)]


def calibration_reader(input_name: str, batches: list[np.ndarray]) -> Any:
    """An onnxruntime CalibrationDataReader over the batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.items, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def quantize_int8(reid: ReidModel, out: str | Path, calib: str | Path, *, count: int = 300,
                  tracker: bool = False, method: str = "minmax", opset: int = 17, seed: int = 0) -> Path:
    """Export fp32 ONNX (temporary), pre-process it (shape inference, graph optimisation), quantize it
    statically on `count` crops of `calib`, re-attach the metadata; returns `out`."""
    from occreid.inference.export_onnx import OnnxReidModel, attach_metadata, export_onnx

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"--calib-method {method}: choose one of {', '.join(CALIBRATION_METHODS)}")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    paths = calibration_images(calib, count, seed)
    batches = crop_batches(reid, paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(reid, Path(tmp) / "fp32.onnx", opset=opset, tracker=tracker)
        runner = OnnxReidModel(fp32)
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared), str(out), calibration_reader(runner.input_name, batches), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
        )
    record = {"scheme": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations",
              "calibration": method, "calib_folder": str(Path(calib).resolve()), "calib_images": len(paths)}
    attach_metadata(out, {**runner.metadata, "quantization": record})
    return out
