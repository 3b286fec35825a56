"""Deterministic synthetic occluded pedestrians with exact part labels, written in the Market-1501 layout.

Each identity is a parametric body (head, torso, arms, legs, feet) with its own clothes, colours, textures,
proportions and bag; each camera has its own background, lighting, scale and dominant facing direction.
Queries are always occluded (objects or another person in front), as in Occluded-Duke; the labels keep
only the target's visible pixels. Every image is a pure function of (seed, pid, cam, index), so the files
are byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import colorsys
import csv
import json
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from occreid.errors import ConfigError, DatasetError
from occreid.labels.format import ATOMIC_INDEX, ATOMIC_PARTS, write_label

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
LABELS_DIR = "occreid_labels"
CONFIG_FILE = "synth.json"
META_FILE = "synth_meta.csv"
OCCLUDER_KINDS = ("person", "box", "car", "bush", "pole", "wall")
META_COLUMNS = (
    "file", "label", "split", "pid", "cam", "facing_deg", "occluders",
    *(f"occluded_{p}" for p in ATOMIC_PARTS), "occluded_body",
)  # fmt: skip

# seed-sequence tags: identities, cameras, images and query cameras draw from disjoint streams
_IDENTITY, _CAMERA, _IMAGE, _QUERY_CAMS = 1, 2, 3, 4
_POSE, _OCCLUDER, _NOISE, _DECIDE = 0, 1, 2, 3

_SKIN = ((228, 190, 160), (200, 155, 120), (150, 105, 75))
_HAIR = ((35, 28, 22), (95, 65, 40), (190, 165, 110))
_SHOES = ((32, 32, 34), (226, 226, 222))  # only two: feet are deliberately non-discriminative
_SHIRT = (
    (190, 40, 40), (40, 70, 170), (50, 140, 70), (220, 200, 60), (225, 225, 220), (35, 35, 40),
    (128, 128, 128), (230, 120, 40), (120, 60, 150), (130, 180, 220), (220, 140, 170), (120, 80, 50),
)  # fmt: skip
_TROUSERS = ((50, 70, 110), (30, 30, 35), (110, 110, 115), (180, 160, 110), (30, 35, 70), (90, 60, 40),
             (210, 210, 200))  # fmt: skip
_OBJECT = ((140, 100, 60), (40, 90, 50), (100, 100, 105), (40, 60, 120), (160, 60, 50), (200, 190, 170))


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the generated files; written to `<out>/synth.json`."""

    ids: int = 200
    cams: int = 4
    images_per_id_cam: int = 2
    queries_per_id: int = 2
    height: int = 128
    width: int = 64
    seed: int = 0
    train_occluded_fraction: float = 0.25
    gallery_occluded_fraction: float = 0.2
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        checks = (
            ("ids", 2 <= self.ids <= 9999, "an integer in 2..9999 (half train, half test)"),
            ("cams", 2 <= self.cams <= 9, "an integer in 2..9 (one digit in the Market name)"),
            ("images_per_id_cam", self.images_per_id_cam >= 1, "at least 1"),
            ("queries_per_id", self.queries_per_id >= 1, "at least 1"),
            ("height", self.height >= 48, "at least 48 pixels"),
            ("width", self.width >= 24, "at least 24 pixels"),
            ("seed", self.seed >= 0, "a non-negative integer"),
            ("train_occluded_fraction", 0.0 <= self.train_occluded_fraction <= 1.0, "in [0, 1]"),
            ("gallery_occluded_fraction", 0.0 <= self.gallery_occluded_fraction <= 1.0, "in [0, 1]"),
            ("jpeg_quality", 1 <= self.jpeg_quality <= 100, "in 1..100"),
        )
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"synthetic data: `{key}` = {getattr(self, key)!r} must be {want}")

    @property
    def train_pids(self) -> range:
        return range(1, self.ids // 2 + 1)

    @property
    def test_pids(self) -> range:
        return range(self.ids // 2 + 1, self.ids + 1)


@dataclass(frozen=True)
class ImageSpec:
    """One image to generate: which identity, camera and per-(pid, cam) index, and whether occluded."""

    split: str
    pid: int
    cam: int
    index: int
    occluded: bool

    @property
    def stem(self) -> str:
        return f"{self.pid:04d}_c{self.cam}s1_{self.index + 1:06d}_01"

    @property
    def image_relpath(self) -> str:
        return f"{SPLIT_FOLDERS[self.split]}/{self.stem}.jpg"

    @property
    def label_relpath(self) -> str:
        return f"{LABELS_DIR}/{SPLIT_FOLDERS[self.split]}/{self.stem}.png"


@dataclass(frozen=True)
class Rendering:
    """A rendered crop: RGB image, label of the visible target pixels, and the label without occluders."""

    image: np.ndarray
    label: np.ndarray
    unoccluded_label: np.ndarray
    occluders: tuple[str, ...]
    facing_deg: float


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def image_specs(cfg: SynthConfig) -> list[ImageSpec]:
    """The full generation plan: train and gallery images for every camera, then the occluded queries.

    Query cameras follow a per-identity permutation, so gallery images exist both in other cameras and
    in the query's own camera (same-camera matches are junk by the Market protocol).
    """
    specs: list[ImageSpec] = []
    for pid in range(1, cfg.ids + 1):
        train = pid in cfg.train_pids
        frac = cfg.train_occluded_fraction if train else cfg.gallery_occluded_fraction
        for cam in range(1, cfg.cams + 1):
            for i in range(cfg.images_per_id_cam):
                occluded = bool(_rng(cfg.seed, _IMAGE, pid, cam, i, _DECIDE).random() < frac)
                specs.append(ImageSpec("train" if train else "gallery", pid, cam, i, occluded))
        if not train:
            order = _rng(cfg.seed, _QUERY_CAMS, pid).permutation(cfg.cams) + 1
            next_index = dict.fromkeys(range(1, cfg.cams + 1), cfg.images_per_id_cam)
            for q in range(cfg.queries_per_id):
                cam = int(order[q % cfg.cams])
                specs.append(ImageSpec("query", pid, cam, next_index[cam], True))
                next_index[cam] += 1
    return specs


# ----------------------------------------------------------------------------------------------------
# Appearance: identities, cameras, poses


@dataclass(frozen=True)
class _Material:
    kind: str  # solid | stripes | checks | noise
    c1: tuple[float, ...]
    c2: tuple[float, ...] = (0.0, 0.0, 0.0)
    period: float = 0.05  # in units of the frame scale (person height)
    amp: float = 0.0


@dataclass(frozen=True)
class _Identity:
    skin: _Material
    hair: _Material
    long_hair: bool
    shirt: _Material
    long_sleeves: bool
    trousers: _Material
    shorts: bool
    shoes: _Material
    bag: str  # none | backpack | shoulder
    bag_colour: _Material
    bag_side: int
    height: float
    width: float
    head: float
    hip_y: float


@dataclass(frozen=True)
class _Camera:
    wall: tuple[float, ...]
    floor: tuple[float, ...]
    pattern: str
    period: float
    contrast: float
    horizon: float
    gain: tuple[float, ...]
    facing: float
    scale: float


@dataclass(frozen=True)
class _Pose:
    facing: float
    stride: float
    arm_swing: tuple[float, float]
    elbow: float
    height_px: float
    top: float
    cx: float


def _jitter(rng: np.random.Generator, colour: Sequence[float], sd: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.clip(np.asarray(colour, float) + rng.normal(0, sd, 3), 0, 255))


def _pick(rng: np.random.Generator, palette: Sequence[Sequence[float]]) -> Sequence[float]:
    return palette[int(rng.integers(len(palette)))]


def _choose(rng: np.random.Generator, options: Sequence[str], p: Sequence[float] | None = None) -> str:
    """One option, uniformly or with probabilities `p` (cheaper than Generator.choice)."""
    u = rng.random()
    if p is None:
        return options[min(int(u * len(options)), len(options) - 1)]
    return options[min(int(np.searchsorted(np.cumsum(p), u * sum(p), side="right")), len(options) - 1)]


def _clothing(rng: np.random.Generator, palette: Sequence, kinds: Sequence[str], p: Sequence[float]):
    kind = _choose(rng, kinds, p)
    c1 = _jitter(rng, _pick(rng, palette), 10)
    c2 = _jitter(rng, _pick(rng, _SHIRT), 10)
    return _Material(kind, c1, c2, period=float(rng.uniform(0.025, 0.06)), amp=float(rng.uniform(15, 30)))


def _identity(seed: int, pid: int) -> _Identity:
    """Per-identity attributes; shirts, trousers and bags discriminate, shoes, skin and hair barely."""
    rng = _rng(seed, _IDENTITY, pid)
    shirt = _clothing(rng, _SHIRT, ("solid", "stripes", "checks", "noise"), (0.45, 0.2, 0.15, 0.2))
    trousers = _clothing(rng, _TROUSERS, ("solid", "noise", "stripes"), (0.6, 0.25, 0.15))
    return _Identity(
        skin=_Material("solid", _jitter(rng, _pick(rng, _SKIN), 5)),
        hair=_Material("noise", _jitter(rng, _pick(rng, _HAIR), 5), amp=8.0),
        long_hair=bool(rng.random() < 0.3),
        shirt=shirt,
        long_sleeves=bool(rng.random() < 0.5),
        trousers=trousers,
        shorts=bool(rng.random() < 0.25),
        shoes=_Material("solid", _jitter(rng, _pick(rng, _SHOES), 4)),
        bag=_choose(rng, ("none", "backpack", "shoulder"), (0.5, 0.3, 0.2)),
        bag_colour=_Material("solid", _jitter(rng, _pick(rng, _SHIRT), 10)),
        bag_side=1 if rng.random() < 0.5 else -1,
        height=float(rng.uniform(0.92, 1.0)),
        width=float(rng.uniform(0.88, 1.15)),
        head=float(rng.uniform(0.92, 1.08)),
        hip_y=float(rng.uniform(0.49, 0.54)),
    )


def _camera(cfg: SynthConfig, cam: int) -> _Camera:
    """Per-camera scene: background hue spaced around the colour wheel, lighting, facing and scale."""
    shared = _rng(cfg.seed, _CAMERA, 0)
    hue0, facing_offset = shared.random(), int(shared.integers(4))
    rng = _rng(cfg.seed, _CAMERA, cam)
    hue = (hue0 + (cam - 1) / cfg.cams + rng.uniform(-0.04, 0.04)) % 1.0
    wall = colorsys.hsv_to_rgb(hue, rng.uniform(0.3, 0.55), rng.uniform(0.5, 0.8))
    floor = colorsys.hsv_to_rgb((hue + 0.5 + rng.uniform(-0.1, 0.1)) % 1.0, rng.uniform(0.1, 0.3),
                                rng.uniform(0.35, 0.6))  # fmt: skip
    directions = (0.0, math.pi, math.pi / 2, -math.pi / 2)
    cast = rng.uniform(0.88, 1.12, 3)
    return _Camera(
        wall=tuple(255.0 * v for v in wall),
        floor=tuple(255.0 * v for v in floor),
        pattern=_choose(rng, ("stripes", "tiles", "gradient")),
        period=float(rng.uniform(5, 14)) * cfg.height / 128,
        contrast=float(rng.uniform(10, 30)),
        horizon=float(rng.uniform(0.55, 0.8)),
        gain=tuple(float(v) for v in rng.uniform(0.78, 1.15) * cast),
        facing=directions[(cam - 1 + facing_offset) % 4] + float(rng.uniform(-0.35, 0.35)),
        scale=float(rng.uniform(0.8, 0.92)),
    )


def _pose(rng: np.random.Generator, ident: _Identity, cam: _Camera, h: int, w: int, flip_p: float = 0.3):
    """Per-image pose and placement: facing near the camera's (sometimes reversed), walking phase."""
    facing = cam.facing + rng.normal(0, 0.25) + (math.pi if rng.random() < flip_p else 0.0)
    stride = float(rng.uniform(-0.09, 0.09))
    swing = (-0.8 * stride + rng.normal(0, 0.015), 0.8 * stride + rng.normal(0, 0.015))
    height_px = cam.scale * ident.height * rng.uniform(0.96, 1.04) * h
    top = rng.uniform(0.15, 0.85) * max(h - height_px, 0.0)
    cx = w / 2 + rng.uniform(-0.07, 0.07) * w
    return _Pose(float(facing), stride, swing, float(rng.uniform(0, 0.04)), float(height_px), float(top),
                 float(cx))  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# Rasterisation: each shape kind is evaluated at once on per-primitive pixel windows, painter's order


@dataclass(frozen=True)
class _Prim:
    """A filled shape in one material, labelled `part`; `frame` = (x0, y0, scale) for its textures."""

    shape: str  # capsule | ellipse | trapezoid | rect
    params: tuple[float, ...]
    material: _Material
    part: int
    frame: tuple[float, float, float]


def _capsules(p: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments (x0, y0)-(x1, y1) swept by a disc whose radius goes linearly from r0 to r1 (limbs)."""
    x0, y0, x1, y1, r0, r1 = p
    dx, dy = x1 - x0, y1 - y0
    inv = 1.0 / np.maximum(dx * dx + dy * dy, 1e-9)
    t = np.clip((xx - x0) * (dx * inv) + (yy - y0) * (dy * inv), 0.0, 1.0)
    d2 = (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2
    rad2 = (r0 + t * (r1 - r0)) ** 2
    return d2 <= rad2, d2 / rad2


def _capsule_boxes(p: np.ndarray) -> tuple[np.ndarray, ...]:
    x0, y0, x1, y1, r0, r1 = p
    r = np.maximum(r0, r1)
    return np.minimum(x0, x1) - r, np.minimum(y0, y1) - r, np.maximum(x0, x1) + r, np.maximum(y0, y1) + r


def _ellipses(p: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned ellipses centred (cx, cy) with radii (rx, ry), cut off at rows >= y_max."""
    cx, cy, rx, ry, y_max = p
    d2 = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    return (d2 <= 1.0) & (yy < y_max), d2


def _ellipse_boxes(p: np.ndarray) -> tuple[np.ndarray, ...]:
    cx, cy, rx, ry, y_max = p
    return cx - rx, cy - ry, cx + rx, np.minimum(cy + ry, y_max)


def _trapezoids(p: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows y0..y1 centred on cx, half-width going linearly from w0 to w1 (the torso)."""
    cx, y0, y1, w0, w1 = p
    half = np.maximum(w0 + (yy - y0) / np.maximum(y1 - y0, 1e-9) * (w1 - w0), 1e-6)
    u2 = ((xx - cx) / half) ** 2
    return (u2 <= 1.0) & (yy >= y0) & (yy <= y1), u2


def _trapezoid_boxes(p: np.ndarray) -> tuple[np.ndarray, ...]:
    cx, y0, y1, w0, w1 = p
    half = np.maximum(w0, w1)
    return cx - half, y0, cx + half, y1


def _rects(p: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned rectangles [x0, x1] x [y0, y1], shaded across their width (poles look round)."""
    x0, y0, x1, y1 = p
    u2 = np.minimum(((2 * xx - x0 - x1) / np.maximum(x1 - x0, 1e-9)) ** 2, 1.0)
    mask = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
    return mask, np.broadcast_to(u2, mask.shape)


def _rect_boxes(p: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(p)


# shape -> (bounding boxes x0, y0, x1, y1 from parameters, coverage and shading on pixel centres)
_SHAPES: dict[str, tuple[Callable[..., tuple], Callable[..., tuple[np.ndarray, np.ndarray]]]] = {
    "capsule": (_capsule_boxes, _capsules),
    "ellipse": (_ellipse_boxes, _ellipses),
    "trapezoid": (_trapezoid_boxes, _trapezoids),
    "rect": (_rect_boxes, _rects),
}
_TEXTURES = {"solid": 0, "stripes": 1, "checks": 2, "noise": 3}


def _rasterise(prims: Sequence[_Prim], h: int, w: int) -> tuple[np.ndarray, ...]:
    """Visible pixels (y, x), the index of the topmost primitive there (later ones cover earlier) and its
    shading. Each shape kind is evaluated at once on per-primitive windows of one common size."""
    ys, xs, ks, shades = [], [], [], []
    for shape, (boxes, raster) in _SHAPES.items():
        idx = np.asarray([i for i, p in enumerate(prims) if p.shape == shape], np.int64)
        if idx.size == 0:
            continue
        params = np.asarray([prims[i].params for i in idx], np.float32).T
        bx0, by0, bx1, by1 = boxes(params)
        wh = min(h, int(np.ceil(np.max(by1 - by0))) + 2)
        ww = min(w, int(np.ceil(np.max(bx1 - bx0))) + 2)
        i0 = np.clip(np.floor(by0), 0, h - wh).astype(np.int64)
        j0 = np.clip(np.floor(bx0), 0, w - ww).astype(np.int64)
        yy = (i0[:, None, None] + np.arange(wh)[None, :, None]).astype(np.float32) + 0.5
        xx = (j0[:, None, None] + np.arange(ww)[None, None, :]).astype(np.float32) + 0.5
        mask, shade = raster(params[:, :, None, None], yy, xx)
        kk, ii, jj = np.nonzero(mask)
        ys.append(i0[kk] + ii)
        xs.append(j0[kk] + jj)
        ks.append(idx[kk])
        shades.append(shade[kk, ii, jj])
    y, x, k, s = (np.concatenate(a) for a in (ys, xs, ks, shades))
    top = np.full((h, w), -1, np.int64)
    np.maximum.at(top, (y, x), k)
    keep = k == top[y, x]
    return y[keep], x[keep], k[keep], s[keep]


def _draw(img: np.ndarray, label: np.ndarray, prims: Sequence[_Prim], rng: np.random.Generator) -> None:
    """Paint primitives over `img` and write their part index into `label` where they are visible."""
    if not prims:
        return
    py, px, k, shade = _rasterise(prims, *label.shape)
    frame = np.asarray([p.frame for p in prims], np.float32)[k]
    bx = (px + 0.5 - frame[:, 0]) / frame[:, 2]
    by = (py + 0.5 - frame[:, 1]) / frame[:, 2]
    mats = [p.material for p in prims]
    kind = np.asarray([_TEXTURES[m.kind] for m in mats])[k]
    c1 = np.asarray([m.c1 for m in mats], np.float32)[k]
    c2 = np.asarray([m.c2 for m in mats], np.float32)[k]
    period = np.asarray([m.period for m in mats], np.float32)[k]
    amp = np.asarray([m.amp for m in mats], np.float32)[k]
    stripe = (kind == 1) & (np.floor(by / period).astype(np.int64) % 2 == 1)
    check = (kind == 2) & ((np.floor(by / period) + np.floor(bx / period)).astype(np.int64) % 2 == 1)
    base = np.where(stripe[:, None], c2, c1)
    base = np.where(check[:, None], 0.55 * c1 + 0.45 * c2, base)
    base += (rng.standard_normal(k.shape[0]).astype(np.float32) * amp * (kind == 3))[:, None]
    img[py, px] = base * (1.0 - 0.3 * shade)[:, None]
    label[py, px] = np.asarray([p.part for p in prims], np.uint8)[k]


# ----------------------------------------------------------------------------------------------------
# The body


def _body_prims(ident: _Identity, pose: _Pose) -> list[_Prim]:
    """Body shapes in painter's order, from a 3-D stick figure rotated by the facing angle.

    Body frame: x to the person's left, y down (0 = top of head, 1 = soles), z forward, in units of
    the person's height. Facing phi = 0 looks at the camera, so the person's left is on the image right;
    a point projects to image x = x cos(phi) + z sin(phi) and lies z cos(phi) - x sin(phi) toward the
    camera, which orders the shapes.
    """
    c, s = math.cos(pose.facing), math.sin(pose.facing)
    hp, top, cx, wf = pose.height_px, pose.top, pose.cx, ident.width
    frame = (cx, top, hp)
    layers: list[tuple[float, _Prim]] = []

    def proj(x: float, y: float, z: float) -> tuple[float, float, float]:
        return cx + (x * c + z * s) * hp, top + y * hp, z * c - x * s

    def across(lateral: float, depth: float) -> float:
        """Projected half-width of an elliptic cross-section (lateral, depth half-axes)."""
        return hp * math.hypot(lateral * c, depth * s)

    def add(depth: float, shape: str, params: Sequence[float], material: _Material, part: str) -> None:
        prim = _Prim(shape, tuple(float(v) for v in params), material, ATOMIC_INDEX[part], frame)
        layers.append((depth, prim))

    def limb(depth, a, b, r0, r1, material, part) -> None:
        add(depth, "capsule", (a[0], a[1], b[0], b[1], r0 * hp, r1 * hp), material, part)

    sw, hw, hip_y = 0.11 * wf, 0.075 * wf, ident.hip_y
    w_top, w_bot = across(sw, 0.06), across(1.15 * hw, 0.055)
    torso = (cx, top + 0.16 * hp, top + (hip_y + 0.03) * hp, w_top, w_bot)
    add(0.0, "trapezoid", torso, ident.shirt, "torso")
    add(0.0, "ellipse", (cx, top + 0.185 * hp, w_top, 0.035 * hp, 1e9), ident.shirt, "torso")

    rx, ry = 0.056 * ident.head * hp, 0.068 * ident.head * hp
    hy = top + ry + 0.005 * hp
    limb(0.03, (cx, hy + 0.5 * ry), (cx, top + 0.175 * hp), 0.024 * wf, 0.026 * wf, ident.skin, "head")
    add(0.05, "ellipse", (cx, hy, rx, ry, 1e9), ident.skin, "head")
    # hair covers the crown from the front, most of the head from behind, and sits away from the face
    cover = (-0.15 if c > 0.3 else 0.45 if c < -0.3 else 0.05) + (0.45 if ident.long_hair else 0.0)
    hair_ry = 0.95 * ry + (0.5 * ry if ident.long_hair else 0.0)
    add(0.05, "ellipse", (cx - s * 0.2 * rx, hy - 0.12 * ry, 1.06 * rx, hair_ry, hy + cover * ry), ident.hair,
        "head")  # fmt: skip

    forearm = ident.shirt if ident.long_sleeves else ident.skin
    for side, name, swing in ((1, "left", pose.arm_swing[0]), (-1, "right", pose.arm_swing[1])):
        sh = proj(side * sw, 0.175, 0.0)
        el = proj(side * (sw + 0.012), 0.33, 0.5 * swing + pose.elbow)
        wr = proj(side * (sw + 0.016), 0.47, swing + 1.5 * pose.elbow)
        hd = proj(side * (sw + 0.017), 0.495, 1.05 * swing + 1.5 * pose.elbow)
        d = (sh[2] + el[2] + wr[2]) / 3 + 0.02
        limb(d, sh, el, 0.034 * wf, 0.028 * wf, ident.shirt, f"{name}_arm")
        limb(d, el, wr, 0.027 * wf, 0.022 * wf, forearm, f"{name}_arm")
        add(d, "ellipse", (hd[0], hd[1], 0.022 * hp, 0.026 * hp, 1e9), ident.skin, f"{name}_arm")

    calf = ident.skin if ident.shorts else ident.trousers
    for side, name, stride in ((1, "left", pose.stride), (-1, "right", -pose.stride)):
        hi = proj(side * 0.55 * hw, hip_y, 0.0)
        kn = proj(side * 0.6 * hw, (hip_y + 0.925) / 2, 0.5 * stride + 0.01)
        an = proj(side * 0.55 * hw, 0.925, stride)
        ft = proj(side * 0.55 * hw, 0.955, stride + 0.025)
        d = (hi[2] + kn[2] + an[2]) / 3 - 0.03
        limb(d, hi, kn, 0.046 * wf, 0.037 * wf, ident.trousers, f"{name}_leg")
        limb(d, kn, an, 0.036 * wf, 0.027 * wf, calf, f"{name}_leg")
        add(d + 0.005, "ellipse", (ft[0], ft[1], across(0.03, 0.055), 0.028 * hp, 1e9), ident.shoes,
            f"{name}_foot")  # fmt: skip

    # carried bags are labelled torso: they belong to the upper-body appearance of the person
    if ident.bag == "backpack":
        bp = proj(0.0, 0.32, -0.075)
        pack = (bp[0], bp[1], across(0.085 * wf, 0.045), 0.13 * hp, 1e9)
        add(bp[2] + 0.01, "ellipse", pack, ident.bag_colour, "torso")
    elif ident.bag == "shoulder":
        bg = proj(ident.bag_side * (sw + 0.035), 0.46, 0.01)
        limb(0.025, proj(-ident.bag_side * 0.8 * sw, 0.17, 0.0), bg, 0.009, 0.009, ident.bag_colour, "torso")
        add(bg[2] + 0.025, "ellipse", (bg[0], bg[1], across(0.03, 0.07), 0.055 * hp, 1e9), ident.bag_colour,
            "torso")  # fmt: skip
    layers.sort(key=lambda layer: layer[0])  # stable: equal depths keep their drawing order
    return [prim for _, prim in layers]


def _background(cam: _Camera, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The camera's scene: patterned wall above a horizon, shaded floor below, shifted per image."""
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5 + rng.uniform(0, 2 * cam.period)
    if cam.pattern == "stripes":
        pat = (np.floor(xx / cam.period) % 2) * 2 - 1
    elif cam.pattern == "tiles":
        pat = ((np.floor(xx / cam.period) + np.floor(yy / cam.period)) % 2) * 2 - 1
    else:
        pat = np.broadcast_to(2 * yy / h - 1, (h, w))
    wall = np.asarray(cam.wall, np.float32) + cam.contrast * pat[..., None]
    floor = np.asarray(cam.floor, np.float32) * (0.8 + 0.4 * yy / h)[..., None]
    horizon = (cam.horizon + rng.uniform(-0.05, 0.05)) * h
    return np.where((yy < horizon)[..., None], wall, floor).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Occluders


def _occluder_prims(kind: str, cfg: SynthConfig, spec: ImageSpec, cam: _Camera, target: _Pose,
                    rng: np.random.Generator) -> list[_Prim]:  # fmt: skip
    """Shapes of one occluder placed in front of the target: mostly its lower body or one side."""
    h, w = cfg.height, cfg.width
    hp, top, cx = target.height_px, target.top, target.cx
    frame = (cx, top, hp)

    def prim(shape: str, params: Sequence[float], material: _Material) -> _Prim:
        return _Prim(shape, tuple(float(v) for v in params), material, 1, frame)

    obj = _Material(_choose(rng, ("solid", "noise", "stripes")), _jitter(rng, _pick(rng, _OBJECT), 12),
                    _jitter(rng, _pick(rng, _OBJECT), 12), period=float(rng.uniform(0.04, 0.1)),
                    amp=float(rng.uniform(8, 20)))  # fmt: skip
    if kind == "person":
        other = int(rng.integers(1, cfg.ids))
        other += other >= spec.pid
        ident = _identity(cfg.seed, other)
        pose = _pose(rng, ident, cam, h, w)
        hp2 = hp * rng.uniform(1.05, 1.3)
        side = 1.0 if rng.random() < 0.5 else -1.0
        pose = _Pose(pose.facing, pose.stride, pose.arm_swing, pose.elbow, float(hp2),
                     float(top + hp - hp2 + rng.uniform(0, 0.08) * hp2),
                     float(cx + side * rng.uniform(0.15, 0.4) * w))  # fmt: skip
        return _body_prims(ident, pose)
    if kind == "box":
        xc, half = cx + rng.uniform(-0.3, 0.3) * w, rng.uniform(0.3, 0.6) * w
        y0 = top + hp * rng.uniform(0.45, 0.75)
        lid = _Material("solid", tuple(0.6 * v for v in obj.c1))
        return [prim("rect", (xc - half, y0, xc + half, h + 1), obj),
                prim("rect", (xc - half, y0, xc + half, y0 + 0.04 * hp), lid)]  # fmt: skip
    if kind == "car":
        y0 = top + hp * rng.uniform(0.45, 0.7)
        if rng.random() < 0.5:
            x0, x1 = -1.0, w * rng.uniform(0.7, 1.2)
        else:
            x0, x1 = w * rng.uniform(-0.2, 0.3), w + 1.0
        body = _Material("solid", _jitter(rng, _pick(rng, _SHIRT), 15))
        glass = _Material("noise", (60.0, 75.0, 95.0), amp=10.0)
        tyre = _Material("solid", (25.0, 25.0, 25.0))
        r = 0.08 * hp
        return [prim("ellipse", ((x0 + x1) / 2, y0, 0.4 * (x1 - x0), 0.12 * hp, 1e9), glass),
                prim("rect", (x0, y0, x1, h + 1), body),
                prim("ellipse", (x0 + 0.2 * (x1 - x0), h - 0.02 * hp, r, r, 1e9), tyre),
                prim("ellipse", (x0 + 0.8 * (x1 - x0), h - 0.02 * hp, r, r, 1e9), tyre)]  # fmt: skip
    if kind == "bush":
        green = _Material("noise", _jitter(rng, (55, 115, 45), 12), amp=25.0)
        ys = top + hp * rng.uniform(0.6, 0.85, int(rng.integers(4, 8)))
        rs = rng.uniform(0.18, 0.32, ys.shape[0]) * w
        xs = rng.uniform(-0.1, 1.1, ys.shape[0]) * w
        return [prim("rect", (-1.0, ys.max(), w + 1.0, h + 1), green),
                *(prim("ellipse", (x, y, r, r, 1e9), green) for x, y, r in zip(xs, ys, rs))]  # fmt: skip
    if kind == "pole":
        xc = cx + (1.0 if rng.random() < 0.5 else -1.0) * rng.uniform(0.04, 0.15) * hp
        half = rng.uniform(0.035, 0.065) * hp
        metal = _Material("noise", _jitter(rng, (150, 150, 155), 20), amp=6.0)
        return [prim("rect", (xc - half, -1.0, xc + half, h + 1), metal)]
    if kind == "wall":
        edge = cx + rng.uniform(-0.06, 0.08) * hp
        y0 = top + hp * rng.uniform(0, 0.3) if rng.random() < 0.5 else -1.0
        x0, x1 = (edge, w + 1.0) if rng.random() < 0.5 else (-1.0, 2 * cx - edge)
        return [prim("rect", (x0, y0, x1, h + 1), obj)]
    raise ConfigError(f"unknown occluder kind {kind!r}; expected one of {OCCLUDER_KINDS}")


def occluded_fractions(label: np.ndarray, unoccluded_label: np.ndarray) -> np.ndarray:
    """Per atomic part (1..8), the fraction of its unoccluded pixels hidden in `label`; NaN if absent."""
    n = len(ATOMIC_PARTS) + 1
    full = np.bincount(unoccluded_label.ravel(), minlength=n)[1:n].astype(np.float64)
    seen = np.bincount(label.ravel(), minlength=n)[1:n].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(full > 0, 1.0 - seen / full, np.nan)


def _acceptable(label: np.ndarray, full: np.ndarray) -> bool:
    """An occlusion must hide over half of some part (of >= 4 pixels) yet leave a quarter of the body."""
    n = len(ATOMIC_PARTS) + 1
    full_n = np.bincount(full.ravel(), minlength=n)[1:]
    seen_n = np.bincount(label.ravel(), minlength=n)[1:]
    big = full_n >= 4
    return bool(np.any(seen_n[big] < 0.5 * full_n[big])) and seen_n.sum() >= 0.25 * full_n.sum()


_OCCLUDER_P = (0.3, 0.15, 0.12, 0.13, 0.12, 0.18)  # in the order of OCCLUDER_KINDS


def _occlude(cfg, spec, cam, pose, img, full, rng) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Try random occluders until the result is acceptable; fall back to a low box hiding the feet."""
    h, w = full.shape
    for _ in range(8):
        kinds = [_choose(rng, OCCLUDER_KINDS, _OCCLUDER_P)]
        if rng.random() < 0.15:
            kinds.append(_choose(rng, [k for k in OCCLUDER_KINDS if k != kinds[0]]))
        prims = [p for kind in kinds for p in _occluder_prims(kind, cfg, spec, cam, pose, rng)]
        trial, hidden = img.copy(), np.zeros_like(full)
        _draw(trial, hidden, prims, rng)
        label = np.where(hidden > 0, 0, full).astype(np.uint8)
        if _acceptable(label, full):
            return trial, label, tuple(kinds)
    y0 = pose.top + 0.6 * pose.height_px
    crate = _Prim("rect", (-1.0, y0, w + 1.0, h + 1.0), _Material("noise", (120.0, 95.0, 70.0), amp=10.0), 1,
                  (pose.cx, pose.top, pose.height_px))  # fmt: skip
    trial, hidden = img.copy(), np.zeros_like(full)
    _draw(trial, hidden, [crate], rng)
    return trial, np.where(hidden > 0, 0, full).astype(np.uint8), ("box",)


def _render(cfg: SynthConfig, spec: ImageSpec, ident: _Identity, cam: _Camera, with_occluders: bool
            ) -> Rendering:  # fmt: skip
    h, w = cfg.height, cfg.width
    pose_rng = _rng(cfg.seed, _IMAGE, spec.pid, spec.cam, spec.index, _POSE)
    noise_rng = _rng(cfg.seed, _IMAGE, spec.pid, spec.cam, spec.index, _NOISE)
    pose = _pose(pose_rng, ident, cam, h, w)
    img = _background(cam, h, w, noise_rng)
    full = np.zeros((h, w), np.uint8)
    _draw(img, full, _body_prims(ident, pose), pose_rng)
    label, kinds = full, ()
    if with_occluders and spec.occluded:
        occ_rng = _rng(cfg.seed, _IMAGE, spec.pid, spec.cam, spec.index, _OCCLUDER)
        img, label, kinds = _occlude(cfg, spec, cam, pose, img, full, occ_rng)
    light = np.asarray(cam.gain, np.float32) * noise_rng.uniform(0.93, 1.07)
    img = img * light + noise_rng.normal(0.0, 3.0, img.shape).astype(np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    facing = (math.degrees(pose.facing) + 180.0) % 360.0 - 180.0
    return Rendering(image, label, full, kinds, facing)


def render_person(cfg: SynthConfig, spec: ImageSpec, *, with_occluders: bool = True) -> Rendering:
    """Render one crop exactly as `generate` writes it (before JPEG); without occluders on request.

    The person, background and noise use random streams separate from the occluders', so the render
    without occluders shows the very same person: the reference for per-part visibility.
    """
    return _render(cfg, spec, _identity(cfg.seed, spec.pid), _camera(cfg, spec.cam), with_occluders)


# ----------------------------------------------------------------------------------------------------
# Writing the dataset


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.4f}"


def _write_identity(job: tuple[SynthConfig, list[ImageSpec], str]) -> list[list[str]]:
    """Render and write every image of one identity; return their metadata rows (runs in a worker)."""
    from PIL import Image

    cfg, specs, out = job
    ident = _identity(cfg.seed, specs[0].pid)
    cams = {cam: _camera(cfg, cam) for cam in sorted({sp.cam for sp in specs})}
    rows = []
    for spec in specs:
        r = _render(cfg, spec, ident, cams[spec.cam], True)
        Image.fromarray(r.image, mode="RGB").save(Path(out) / spec.image_relpath, format="JPEG",
                                                   quality=cfg.jpeg_quality)  # fmt: skip
        write_label(Path(out) / spec.label_relpath, r.label)
        occ = occluded_fractions(r.label, r.unoccluded_label)
        body = 1.0 - np.count_nonzero(r.label) / max(np.count_nonzero(r.unoccluded_label), 1)
        rows.append([spec.image_relpath, spec.label_relpath, spec.split, str(spec.pid), str(spec.cam),
                     f"{r.facing_deg:.1f}", "+".join(r.occluders) or "none", *(_fmt(float(v)) for v in occ),
                     _fmt(body)])  # fmt: skip
    return rows


def _prepare(out: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless it is an earlier synthetic set and overwrite is on."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / CONFIG_FILE).is_file():
            raise DatasetError(f"{out}: not empty and holds no {CONFIG_FILE}; choose an empty --out")
        if not overwrite:
            raise DatasetError(f"{out}: a synthetic dataset is already there; pass --overwrite to replace it")
        for name in (*SPLIT_FOLDERS.values(), LABELS_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (CONFIG_FILE, META_FILE):
            (out / name).unlink(missing_ok=True)
    for folder in SPLIT_FOLDERS.values():
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / LABELS_DIR / folder).mkdir(parents=True, exist_ok=True)


def write_dataset(
    out_dir: str | Path, cfg: SynthConfig, *, workers: int = 2, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """Generate the dataset described by `cfg` under `out_dir`; returns a summary (with `seconds`)."""
    start = time.perf_counter()
    out = Path(out_dir)
    _prepare(out, overwrite)
    specs = image_specs(cfg)
    by_pid: dict[int, list[ImageSpec]] = {}
    for spec in specs:
        by_pid.setdefault(spec.pid, []).append(spec)
    jobs = [(cfg, group, str(out)) for group in by_pid.values()]
    if workers > 1:
        with multiprocessing.get_context().Pool(workers) as pool:
            rows = _collect(pool.imap_unordered(_write_identity, jobs), len(jobs), progress)
    else:
        rows = _collect(map(_write_identity, jobs), len(jobs), progress)
    rows.sort()
    with open(out / META_FILE, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(META_COLUMNS)
        writer.writerows(rows)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True) + "\n")
    images = {s: sum(sp.split == s for sp in specs) for s in SPLIT_FOLDERS}
    occluded = {s: sum(sp.split == s and sp.occluded for sp in specs) for s in SPLIT_FOLDERS}
    return {
        "out_dir": str(out),
        "config": asdict(cfg),
        "ids": {"train": len(cfg.train_pids), "test": len(cfg.test_pids)},
        "images": images,
        "occluded": occluded,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _collect(groups: Iterable[list[list[str]]], total: int, progress: bool) -> list[list[str]]:
    if progress:
        from tqdm import tqdm

        groups = tqdm(groups, total=total, desc="synth", unit="id")
    return [row for group in groups for row in group]


def generate(
    out_dir: str | Path,
    *,
    ids: int = 200,
    cams: int = 4,
    images_per_id_cam: int = 2,
    queries_per_id: int = 2,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    train_occluded_fraction: float = 0.25,
    gallery_occluded_fraction: float = 0.2,
    jpeg_quality: int = 90,
    workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a synthetic occluded ReID dataset (Market layout, exact part labels, metadata CSV)."""
    cfg = SynthConfig(
        ids=ids,
        cams=cams,
        images_per_id_cam=images_per_id_cam,
        queries_per_id=queries_per_id,
        height=height,
        width=width,
        seed=seed,
        train_occluded_fraction=train_occluded_fraction,
        gallery_occluded_fraction=gallery_occluded_fraction,
        jpeg_quality=jpeg_quality,
    )
    return write_dataset(out_dir, cfg, workers=workers, progress=progress, overwrite=overwrite)


def read_synth_config(root: str | Path) -> SynthConfig:
    """The `SynthConfig` a synthetic dataset folder was generated with."""
    path = Path(root) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable ({e}); re-run `occreid data synth`") from None
    known = {f.name for f in fields(SynthConfig)}
    if not isinstance(data, dict) or set(data) - known:
        raise DatasetError(f"{path}: not a synthetic-data config; re-run `occreid data synth`")
    return SynthConfig(**data)


def read_synth_meta(root: str | Path) -> list[dict[str, str]]:
    """Rows of `synth_meta.csv` (file, label, split, pid, cam, facing, occluders, occluded fractions)."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: missing; re-run `occreid data synth`")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
