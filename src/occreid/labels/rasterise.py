"""Keypoints -> canonical atomic part map by limb-aware rasterisation.

Each part is a union of primitives whose size scales with the person: thick segments (limbs, neck,
hands, feet), an axis-aligned ellipse (head) and the shoulder-hip polygon with a band around it
(torso). A pixel's score for a primitive is its distance normalised by the primitive's radius (inside
when <= 1; squared distances are compared, which keeps their order). Overlaps are resolved by tiers
(head > arms > feet > torso interior > legs > torso band: arms lie in front of the torso, legs start
under it) and, inside a tier, by the lower score. A part whose joints are missing is absent.
Everything is evaluated over the pixel grid with numpy, in row chunks so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occreid.labels.format import ATOMIC_INDEX
from occreid.labels.keypoints import JOINT_INDEX, Keypoints

TIER_TORSO_BAND, TIER_LEGS, TIER_TORSO, TIER_FEET, TIER_ARMS, TIER_HEAD = range(6)


@dataclass(frozen=True)
class BodyProportions:
    """Sizes as fractions of the torso length T (mid-shoulder to mid-hip). Decision: chosen from
    average adult proportions, loosened a little for clothes and low-resolution crops."""

    arm_radius: float = 0.13
    hand_length: float = 0.15
    leg_radius: float = 0.17
    foot_length: float = 0.2
    foot_radius: float = 0.12
    head_rx: float = 0.21
    head_ry: float = 0.26
    neck_radius: float = 0.1
    torso_margin: float = 0.12
    torso_min_half_width: float = 0.3
    torso_line_radius: float = 0.28
    fallback_torso_of_height: float = 0.28


# (joint a, joint b, typical |a - b| / T): the body-scale estimates (torso length = 1).
_SCALE_PAIRS = (
    ("left_shoulder", "right_shoulder", 0.75),
    ("left_hip", "right_hip", 0.5),
    ("left_shoulder", "left_elbow", 0.6),
    ("right_shoulder", "right_elbow", 0.6),
    ("left_elbow", "left_wrist", 0.55),
    ("right_elbow", "right_wrist", 0.55),
    ("left_hip", "left_knee", 0.85),
    ("right_hip", "right_knee", 0.85),
    ("left_knee", "left_ankle", 0.85),
    ("right_knee", "right_ankle", 0.85),
    ("left_shoulder", "left_hip", 1.0),
    ("right_shoulder", "right_hip", 1.0),
)
_FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
_CHUNK_ELEMENTS = 1 << 22


def body_scale(kp: Keypoints, present: np.ndarray, height: int, props: BodyProportions) -> float:
    """Torso length T in pixels: the 75th percentile of the limb-length estimates (foreshortening only
    shortens a limb), or a fraction of the image height when no pair of joints is present."""
    a = np.array([JOINT_INDEX[p[0]] for p in _SCALE_PAIRS])
    b = np.array([JOINT_INDEX[p[1]] for p in _SCALE_PAIRS])
    ratio = np.array([p[2] for p in _SCALE_PAIRS])
    ok = present[a] & present[b]
    est = np.linalg.norm(kp.xy[a] - kp.xy[b], axis=1)[ok] / ratio[ok]
    top, bottom = _side_mean(kp, present, "shoulder"), _side_mean(kp, present, "hip")
    if top is not None and bottom is not None:
        est = np.append(est, np.linalg.norm(top - bottom))
    if est.size == 0:
        return max(1.0, props.fallback_torso_of_height * height)
    return max(1.0, float(np.percentile(est, 75)))


def _side_mean(kp: Keypoints, present: np.ndarray, joint: str) -> np.ndarray | None:
    idx = [JOINT_INDEX[f"{s}_{joint}"] for s in ("left", "right") if present[JOINT_INDEX[f"{s}_{joint}"]]]
    return kp.xy[idx].mean(axis=0) if idx else None


class _Primitives:
    """Collects segments (a, b, radius, part, tier), the head ellipse and the torso polygon."""

    def __init__(self) -> None:
        self.segments: list[tuple[float, float, float, float, float, int, int]] = []
        self.ellipse: tuple[float, float, float, float] | None = None
        self.polygon: np.ndarray | None = None

    def segment(self, a: np.ndarray, b: np.ndarray, radius: float, part: str, tier: int) -> None:
        self.segments.append((a[0], a[1], b[0], b[1], radius, ATOMIC_INDEX[part], tier))


def _build(kp: Keypoints, present: np.ndarray, t: float, props: BodyProportions) -> _Primitives:
    prims = _Primitives()

    def have(name: str) -> bool:
        return bool(present[JOINT_INDEX[name]])

    def at(name: str) -> np.ndarray:
        return kp.xy[JOINT_INDEX[name]]

    for side in ("left", "right"):
        for part, chain, radius, tier in (
            ("arm", ("shoulder", "elbow", "wrist"), props.arm_radius, TIER_ARMS),
            ("leg", ("hip", "knee", "ankle"), props.leg_radius, TIER_LEGS),
        ):
            names = [f"{side}_{j}" for j in chain]
            avail = [n for n in names if have(n)]
            if len(avail) == 1 and avail[0] != names[0]:
                prims.segment(at(avail[0]), at(avail[0]), radius * t, f"{side}_{part}", tier)
            for u, v in zip(avail[:-1], avail[1:]):
                prims.segment(at(u), at(v), radius * t, f"{side}_{part}", tier)
        wrist, elbow = f"{side}_wrist", f"{side}_elbow"
        if have(wrist) and have(elbow):
            d = at(wrist) - at(elbow)
            n = np.linalg.norm(d)
            if n > 0:
                tip = at(wrist) + d / n * props.hand_length * t
                prims.segment(at(wrist), tip, props.arm_radius * t, f"{side}_arm", TIER_ARMS)
        ankle = f"{side}_ankle"
        if have(ankle):
            foot = f"{side}_foot"
            ends = [at(n) for n in (f"{side}_heel", f"{side}_toe") if have(n)]
            if not ends:
                ends = [at(ankle) + np.array([0.0, props.foot_length * t])]
            for e in ends:
                prims.segment(at(ankle), e, props.foot_radius * t, foot, TIER_FEET)
            if len(ends) == 2:
                prims.segment(ends[0], ends[1], props.foot_radius * t, foot, TIER_FEET)

    face = [at(n) for n in _FACE if have(n)]
    if face:
        c = np.mean(face, axis=0)
        prims.ellipse = (c[0], c[1], props.head_rx * t, props.head_ry * t)
        neck = at("neck") if have("neck") else None
        if neck is None and have("left_shoulder") and have("right_shoulder"):
            neck = (at("left_shoulder") + at("right_shoulder")) / 2
        if neck is not None:
            prims.segment(c, neck, props.neck_radius * t, "head", TIER_HEAD)

    top = [at(n) for n in ("left_shoulder", "right_shoulder") if have(n)]
    if not top and have("neck"):
        top = [at("neck")]
    bottom = [at(n) for n in ("right_hip", "left_hip") if have(n)]
    if top and bottom:
        verts = np.array(top + bottom)
        if len(verts) >= 3:
            prims.polygon = verts
            half = max(np.linalg.norm(verts[0] - verts[1]) if len(top) == 2 else 0.0,
                       np.linalg.norm(verts[-1] - verts[-2]) if len(bottom) == 2 else 0.0) / 2  # fmt: skip
            margin = max(props.torso_margin, props.torso_min_half_width - half / t) * t
            for u, v in zip(verts, np.roll(verts, -1, axis=0)):
                prims.segment(u, v, margin, "torso", TIER_TORSO_BAND)
        else:
            prims.segment(verts[0], verts[1], props.torso_line_radius * t, "torso", TIER_TORSO)
    return prims


def _segment_scores(seg: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Squared distance from every pixel to every segment over its squared radius: [S, N]
    (seg rows: ax ay bx by r). Squared keeps the order of distances and saves the square roots."""
    ax, ay, bx, by, r = (seg[:, i : i + 1] for i in range(5))
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    t = ((px - ax) * dx + (py - ay) * dy) / np.where(len2 > 0, len2, 1.0)
    np.clip(t, 0.0, 1.0, out=t)
    ex = px - ax - t * dx
    ey = py - ay - t * dy
    return (ex * ex + ey * ey) / (r * r)


def _inside_polygon(verts: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd rule over all edges at once: [N] bool."""
    x0, y0 = verts[:, :1], verts[:, 1:]
    nxt = np.roll(verts, -1, axis=0)
    x1, y1 = nxt[:, :1], nxt[:, 1:]
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (px < x_at)).sum(axis=0) % 2 == 1


def rasterise_keypoints(
    kp: Keypoints,
    height: int,
    width: int,
    *,
    min_conf: float = 0.1,
    person_mask: np.ndarray | None = None,
    props: BodyProportions | None = None,
) -> np.ndarray:
    """The atomic index map (uint8 [height, width]) of one person's keypoints; joints with confidence
    <= min_conf are missing. With `person_mask` (bool [height, width]) pixels outside it are background."""
    props = props or BodyProportions()
    present = kp.present(min_conf)
    t = body_scale(kp, present, height, props)
    prims = _build(kp, present, t, props)
    seg = np.array(prims.segments, dtype=np.float64).reshape(-1, 7)
    n_prims = len(seg) + (prims.ellipse is not None) + (prims.polygon is not None)
    out = np.zeros((height, width), dtype=np.uint8)
    if n_prims == 0:
        return out
    extra_parts = [ATOMIC_INDEX["head"]] * (prims.ellipse is not None)
    extra_parts += [ATOMIC_INDEX["torso"]] * (prims.polygon is not None)
    extra_tiers = [TIER_HEAD] * (prims.ellipse is not None) + [TIER_TORSO] * (prims.polygon is not None)
    parts = np.concatenate([seg[:, 5], extra_parts]).astype(np.uint8)
    tiers = np.concatenate([seg[:, 6], extra_tiers]).astype(np.float32)[:, None]
    rows = max(1, _CHUNK_ELEMENTS // max(1, n_prims * width))
    seg32 = seg[:, :5].astype(np.float32)
    xs = np.arange(width, dtype=np.float32)
    for r0 in range(0, height, rows):
        yy, xx = np.meshgrid(np.arange(r0, min(height, r0 + rows), dtype=np.float32), xs, indexing="ij")
        px, py = xx.reshape(1, -1), yy.reshape(1, -1)
        scores = [_segment_scores(seg32, px, py)]
        if prims.ellipse is not None:
            cx, cy, rx, ry = prims.ellipse
            ex, ey = (px - np.float32(cx)) / np.float32(rx), (py - np.float32(cy)) / np.float32(ry)
            scores.append(ex * ex + ey * ey)
        if prims.polygon is not None:
            inside = _inside_polygon(prims.polygon, px[0], py[0])
            scores.append(np.where(inside, 0.0, np.inf).astype(np.float32)[None])
        s = np.concatenate(scores, axis=0)
        value = np.where(s <= 1.0, 2.0 * tiers + (1.0 - s), np.float32(-1.0))
        best = value.argmax(axis=0)
        chunk = np.where(value.max(axis=0) >= 0, parts[best], 0).astype(np.uint8)
        out[r0 : r0 + yy.shape[0]] = chunk.reshape(yy.shape)
    if person_mask is not None:
        out[~np.asarray(person_mask, dtype=bool)] = 0
    return out
