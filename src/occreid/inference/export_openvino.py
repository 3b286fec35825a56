"""OpenVINO IR export (`NAME.xml` + `NAME.bin`, fp32 weights) converted from the ONNX export (full or tracker
graph), the occreid metadata in the IR's rt_info, and a CPU runner with OnnxReidModel's `run(x)` interface.

Telemetry: `import openvino` sends a usage event (openvino-telemetry, Google Analytics) unless the user
opted out. occreid imports it with `openvino_telemetry` made unimportable, so OpenVINO falls back to its
bundled no-op stub; a process that imported openvino before is left as it is.

The runner compiles with `INFERENCE_PRECISION_HINT=f32`: OpenVINO's CPU plugin otherwise runs bf16 on CPUs
that have it (this one does), which moved unit BoT embeddings by up to 5e-2 here (f32: 2e-7).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occreid.api import ReidModel
from occreid.errors import ConfigError
from occreid.inference.export_onnx import exported_input

RT_INFO_KEY = ["occreid", "metadata"]


def require_openvino() -> Any:
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # OpenVINO then uses its no-op telemetry stub
    try:
        import openvino
    except ImportError:
        raise ConfigError("OpenVINO export and inference need openvino: pip install 'occreid[openvino]'") from None
    return openvino


def ir_path(out: str | Path) -> Path:
    """`out` if it names an .xml file, else `out/model.xml` (a folder, as trackers' `*_openvino_model/`)."""
    out = Path(out)
    return out if out.suffix == ".xml" else out / "model.xml"


def export_openvino(reid: ReidModel, out: str | Path, *, tracker: bool = False, dynamic_batch: bool = True,
                    opset: int = 17) -> Path:
    """Export to ONNX (a temporary file), convert with `openvino.convert_model`, keep the metadata, save the
    IR without fp16 weight compression; returns the .xml path (the .bin lies beside it)."""
    from occreid.inference.export_onnx import OnnxReidModel, export_onnx

    ov = require_openvino()
    xml = ir_path(out)
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(reid, Path(tmp) / "model.onnx", opset=opset, dynamic_batch=dynamic_batch,
                                tracker=tracker)
        metadata = OnnxReidModel(onnx_file).metadata
        model = ov.convert_model(str(onnx_file))
    model.set_rt_info(json.dumps({**metadata, "runtime": "openvino fp32"}), RT_INFO_KEY)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


class OpenVinoReidModel:
    """An OpenVINO IR run on CPU in fp32: `run(x)` -> name -> array, as `OnnxReidModel.run`."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        """`threads`: OpenVINO's inference threads (default: its own choice)."""
        ov = require_openvino()
        self.path = ir_path(path)
        if not self.path.is_file() or not self.path.with_suffix(".bin").is_file():
            raise ConfigError(f"{self.path}: OpenVINO IR (.xml with its .bin) not found; "
                              "write it with `occreid export openvino`")
        core = ov.Core()
        model = core.read_model(str(self.path))
        if not model.has_rt_info(RT_INFO_KEY):
            raise ConfigError(f"{self.path}: no occreid metadata; export it with `occreid export openvino`")
        self.metadata = json.loads(model.get_rt_info(RT_INFO_KEY).astype(str))
        self.input_size = tuple(self.metadata["input_size"])
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_name = self.compiled.inputs[0].get_any_name()
        self.names = [o.get_any_name() for o in self.compiled.outputs]

    def run(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        result = self.request.infer({0: exported_input(x, self.input_size, self.path)})
        return {name: np.array(result[port]) for name, port in zip(self.names, self.compiled.outputs)}
