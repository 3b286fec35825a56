"""MediaPipe Pose as an offline keypoint + person-mask estimator (optional extra `pose`).

The model ships inside the mediapipe wheel, so it runs without network. Two modes:

- `crop` (default): a ReID image is already a person crop, so the crop itself is the region of
  interest. BlazePose's landmark network (`PoseLandmarkByRoiCpu`) runs on a square window centred on
  the crop, 1.5 x its height on a side (the detector would give ~1.25 x the body's extent), retried
  at 1.25 and 1.75 when it reports no person. This skips BlazePose's person detector, which is
  face-based: on small back-view crops it misses people or invents a tiny body around a face-like
  blob, which put heads on chests in an earlier trial (docs/labels.md, "MediaPipe Pose").
- `detector`: the legacy `mp.solutions.pose` pipeline (detector, then landmarks). Crops are upscaled
  to ~256 px high and the minimum detection confidence is 0.2; when the person found centres far
  from the crop centre, the central window is tried too and the person nearest the centre is kept.

The segmentation mask (thresholded) bounds the rasterised label in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from occreid.errors import LabelError, OccreidError
from occreid.labels.keypoint_files import keypoints_from_mediapipe
from occreid.labels.keypoints import Keypoints

INSTALL_HINT = "MediaPipe is not installed: `pip install 'occreid[pose]'` (mediapipe==0.10.14, protobuf<5)"
Mode = Literal["crop", "detector"]

# BlazePose's landmark subgraph fed with our own region of interest instead of its detector's.
_BY_ROI_GRAPH = """
input_stream: "IMAGE:image"
input_stream: "ROI:roi"
output_stream: "LANDMARKS:landmarks"
output_stream: "SEGMENTATION_MASK:mask"
input_side_packet: "MODEL_COMPLEXITY:model_complexity"
input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation"
node {
  calculator: "PoseLandmarkByRoiCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity"
  input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation"
  output_stream: "LANDMARKS:landmarks"
  output_stream: "SEGMENTATION_MASK:mask_image"
}
node { calculator: "FromImageCalculator" input_stream: "IMAGE:mask_image" output_stream: "IMAGE_CPU:mask" }
"""


def require_mediapipe() -> Any:
    """Import mediapipe or raise a clear error naming the extra to install."""
    try:
        import mediapipe as mp
    except ImportError as e:
        raise OccreidError(f"{INSTALL_HINT} ({e})") from None
    return mp


def crop_roi(h: int, w: int, scale: float) -> dict[str, float]:
    """Normalised square region centred on an h x w crop, `scale` x its height on a side."""
    return {"x_center": 0.5, "y_center": 0.5, "width": scale * h / w, "height": scale, "rotation": 0.0}


class MediaPipePose:
    """Keypoints and a person mask for RGB crops; use as a context manager or call `close()`."""

    def __init__(
        self,
        mode: Mode = "crop",
        roi_scales: Sequence[float] = (1.5, 1.25, 1.75),
        target_height: int = 256,
        min_detection_confidence: float = 0.2,
        model_complexity: int = 1,
        mask_threshold: float = 0.5,
        recentre_beyond: float = 0.2,
        window: tuple[float, float] = (0.15, 0.85),
    ) -> None:
        if mode not in ("crop", "detector"):
            raise LabelError(f"mediapipe mode must be 'crop' or 'detector', got {mode!r}")
        mp = require_mediapipe()
        self.mode = mode
        self.roi_scales = tuple(float(s) for s in roi_scales)
        self.target_height = int(target_height)
        self.mask_threshold = float(mask_threshold)
        self.recentre_beyond = float(recentre_beyond)
        self.window = window
        if mode == "crop":
            from google.protobuf import text_format
            from mediapipe.framework import calculator_pb2
            from mediapipe.framework.formats import rect_pb2
            from mediapipe.python import solution_base

            graph = text_format.Parse(_BY_ROI_GRAPH, calculator_pb2.CalculatorGraphConfig())
            self._pose = solution_base.SolutionBase(
                graph_config=graph, outputs=["landmarks", "mask"],
                side_inputs={"model_complexity": model_complexity, "enable_segmentation": True},
            )
            self._rect = rect_pb2.NormalizedRect
        else:
            self._pose = mp.solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=model_complexity,
                enable_segmentation=True,
                min_detection_confidence=min_detection_confidence,
            )

    def estimate(self, rgb: np.ndarray) -> tuple[Keypoints | None, np.ndarray | None]:
        """(keypoints in the crop's pixels, bool person mask [H, W]) or (None, None) if nobody is found."""
        found = self._estimate_crop(rgb) if self.mode == "crop" else self._estimate_detector(rgb)
        return found if found is not None else (None, None)

    def _estimate_crop(self, rgb: np.ndarray) -> tuple[Keypoints, np.ndarray] | None:
        h, w = rgb.shape[:2]
        image = np.ascontiguousarray(rgb)
        for scale in self.roi_scales:
            result = self._pose.process({"image": image, "roi": self._rect(**crop_roi(h, w, scale))})
            if result.landmarks is not None:
                return self._read(result.landmarks, result.mask, h, w)
        return None

    def _estimate_detector(self, rgb: np.ndarray) -> tuple[Keypoints, np.ndarray] | None:
        h, w = rgb.shape[:2]
        found = self._detect(rgb)
        if found is None or _off_centre(found[0], h, w) > self.recentre_beyond:
            x0, x1 = round(w * self.window[0]), round(w * self.window[1])
            inner = self._detect(np.ascontiguousarray(rgb[:, x0:x1]))
            if inner is not None:
                kp = Keypoints(inner[0].xy + np.array([x0, 0.0]), inner[0].conf)
                mask = np.zeros((h, w), dtype=bool)
                mask[:, x0:x1] = inner[1]
                if found is None or _off_centre(kp, h, w) < _off_centre(found[0], h, w):
                    found = (kp, mask)
        return found

    def _detect(self, rgb: np.ndarray) -> tuple[Keypoints, np.ndarray] | None:
        from PIL import Image

        h, w = rgb.shape[:2]
        scale = max(1.0, self.target_height / h)
        big = rgb
        if scale > 1.0:
            size = (round(w * scale), round(h * scale))
            big = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))
        result = self._pose.process(np.ascontiguousarray(big))
        if result.pose_landmarks is None:
            return None
        return self._read(result.pose_landmarks, result.segmentation_mask, h, w)

    def _read(self, landmarks: Any, seg: Any, h: int, w: int) -> tuple[Keypoints, np.ndarray]:
        """Normalised landmarks -> crop pixels; the soft mask resized to the crop and thresholded."""
        from PIL import Image

        lm = np.array([(p.x, p.y, p.z, p.visibility) for p in landmarks.landmark])
        kp = keypoints_from_mediapipe(lm, (h, w), normalized=True)
        mask = np.ones((h, w), dtype=bool)
        if seg is not None:
            seg = np.asarray(seg, dtype=np.float32)
            if seg.ndim == 3:
                seg = seg[..., 0]
            if seg.shape != (h, w):
                seg = np.asarray(Image.fromarray(seg).resize((w, h), Image.Resampling.BILINEAR))
            mask = seg > self.mask_threshold
        return kp, mask

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> MediaPipePose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _off_centre(kp: Keypoints, h: int, w: int, min_conf: float = 0.5) -> float:
    """Distance of the confident joints' mean from the crop centre, in crop widths / heights."""
    c = kp.centre(min_conf)
    if c is None:
        return float("inf")
    return float(np.hypot((c[0] - (w - 1) / 2) / w, (c[1] - (h - 1) / 2) / h))
