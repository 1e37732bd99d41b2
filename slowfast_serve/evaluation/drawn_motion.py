"""Drawn motion clips: an independent evaluation set for the 8-class motion model.

Evaluation only: these clips are never used for training or model selection. Everything here (shapes, textures,
backgrounds, motion laws, camera effects and encodings) is written from scratch, independently of the training
data generator, so that the model is measured on videos "drawn by someone else".

Every clip follows the model's contract: one foreground object performs one of the 8 motions of
:data:`handler.labels.MOTION_CLASSES` from the first to the last frame (never pausing) and stays inside the
frame's central square (objects covering 40% or more of the square may poke partly out of it); a few static
distractors and a static background may surround it, and only per-frame noise and global brightness flicker
change otherwise. "Clockwise" is as seen on screen (x to the right, y down).

The object is rasterised once into a premultiplied RGBA sprite (with a mip pyramid for strong shrinking),
then placed into each frame with :func:`cv2.warpAffine` (translation, rotation about its centroid, scale) and
alpha-blended over the background. Clips are encoded by piping raw RGB frames to the ``ffmpeg`` command-line
tool. Every clip is a pure function of ``(seed, motion, index)``; the categorical choices (codec family, size,
busy background) cycle with ``index`` so that any suite with ``per_class >= 8`` covers them for every class.
"""

from __future__ import annotations

import argparse
import colorsys
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from handler.labels import MOTION_CLASSES

SIZES = ("tiny", "medium", "large")
CALM_BACKGROUNDS = ("plain", "gradient", "radial", "haze")
BUSY_BACKGROUNDS = (
    "checker_fine",
    "checker_coarse",
    "mosaic",
    "voronoi",
    "stripes",
    "clouds",
    "dot_grid",
    "scribbles",
)
BACKGROUNDS = CALM_BACKGROUNDS + BUSY_BACKGROUNDS
CODEC_FAMILIES = ("h264", "hevc", "vp8", "vp9", "mpeg4", "mpeg2", "mjpeg", "theora")
SHAPE_FAMILIES = (
    "superellipse",
    "fourier_blob",
    "spline_blob",
    "crescent",
    "icon",
    "glyph",
    "word",
    "outline",
    "cross",
    "holed_plate",
    "spiky_star",
    "broken_ring",
)
FRAME_RATES = tuple(Fraction(r) for r in (12, 15, 24, 25, Fraction(30000, 1001), 30, 50, 60))
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16, 2.39, 3 / 2, 2 / 3)

_SALT = 0x0D7A_3E11  # mixed into every generator's seed: this module's own random streams
_AREA = {"tiny": (0.012, 0.03), "medium": (0.06, 0.18), "large": (0.40, 0.55)}  # convex-hull area / square area
_LARGE = 0.40  # from this hull area (fraction of the square) on, an object may poke out of the square
_POKE = 0.15  # how far (fraction of its own extent, per side) a large object may leave the square
_MEASURE_SCALE = 40.0  # px per unit when measuring a shape's geometry
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_ASYMMETRIC_CHARS = "FGJKLPQRabdefhkmnpqrty2345679?&"
_TEXTURES = ("flat", "flat", "linear", "radial", "dots", "plaid", "hatch", "noise", "checker")
_EASINGS = ("linear", "smoothstep", "sine", "ease_in", "ease_out", "wobble")


@dataclass(frozen=True)
class DrawnClip:
    """What a drawn clip shows and how it is stored.

    ``amount`` is the motion's total over the whole clip: for translations the travel as a fraction of the central
    square's side (0.2-0.7), for rotations the angle in degrees (30-400), for growing/shrinking the size ratio
    larger/smaller (1.2-5, always > 1).
    """

    motion: str
    shape: str
    size: str
    background: str
    codec: str
    container: str
    width: int
    height: int
    fps: float
    num_frames: int
    amount: float


# --------------------------------------------------------------------------------------------------- shapes


@dataclass
class _Shape:
    """Drawing operations in unit coordinates (y down; the shape fits in a radius of about 1).

    Ops: ``("poly", pts, value)`` filled polygon; ``("lines", pts, closed, value)`` stroked polyline of the shape's
    stroke width; ``("circle", (x, y), r, value)`` filled disc; ``("text", text, font, height, (x, y), value)``
    Hershey text of the stroke width. ``value`` 255 paints, 0 cuts a hole.
    """

    family: str
    ops: list
    stroke: float = 0.0  # unit width of "lines" and "text" ops
    min_stroke_px: float = 0.0  # the strokes' width in frame pixels never drops below this


def _ring_points(radius: np.ndarray | float, angles: np.ndarray) -> np.ndarray:
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _catmull_rom(points: np.ndarray, samples: int = 14) -> np.ndarray:
    """Closed Catmull-Rom spline through ``points`` (N, 2)."""
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    n = len(points)
    pieces = []
    for i in range(n):
        p0, p1, p2, p3 = points[i - 1], points[i], points[(i + 1) % n], points[(i + 2) % n]
        pieces.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    return np.concatenate(pieces)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _superellipse(rng: np.random.Generator) -> _Shape:
    n = rng.uniform(0.8, 4.5)
    b = rng.uniform(0.45, 0.95)
    th = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    c, s = np.cos(th), np.sin(th)
    body = np.stack([np.sign(c) * np.abs(c) ** (2 / n), b * np.sign(s) * np.abs(s) ** (2 / n)], axis=1)
    phi = rng.uniform(0, 2 * np.pi)
    half = rng.uniform(0.16, 0.32)
    tip = rng.uniform(0.15, 0.45)
    notch = np.array(
        [[tip * math.cos(phi), tip * math.sin(phi)], *_ring_points(1.6, np.array([phi - half, phi + half]))]
    )
    ops: list = [("poly", body, 255), ("poly", notch, 0)]
    if rng.random() < 0.5:
        a = phi + rng.uniform(2.0, 4.2)
        ops.append(("circle", (0.45 * math.cos(a), 0.45 * b * math.sin(a)), rng.uniform(0.1, 0.17) * b, 0))
    return _Shape("superellipse", ops)


def _fourier_blob(rng: np.random.Generator) -> _Shape:
    th = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    r = np.ones_like(th)
    for k in range(1, 6):
        amp = rng.uniform(0.09, 0.22) if k in (2, 3) else rng.uniform(0.0, 0.14)
        r += amp * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    r = np.maximum(r, 0.35)
    r /= r.max()
    return _Shape("fourier_blob", [("poly", _ring_points(r, th), 255)])


def _spline_blob(rng: np.random.Generator) -> _Shape:
    n = int(rng.integers(5, 10))
    angles = np.sort((np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n)
    radii = rng.uniform(0.45, 1.0, n)
    radii[int(rng.integers(n))] = 1.0
    outline = _catmull_rom(_ring_points(radii, angles))
    return _Shape("spline_blob", [("poly", outline, 255)])


def _crescent(rng: np.random.Generator) -> _Shape:
    phi = rng.uniform(0, 2 * np.pi)
    d = rng.uniform(0.3, 0.6)
    r2 = rng.uniform(0.7, 0.95)
    ops: list = [("circle", (0.0, 0.0), 1.0, 255), ("circle", (d * math.cos(phi), d * math.sin(phi)), r2, 0)]
    return _Shape("crescent", ops)


def _icon(rng: np.random.Generator) -> _Shape:
    kind = rng.choice(["arrow", "house", "keyhole", "flag", "tetromino", "bolt", "mug"])
    ops: list
    if kind == "arrow":
        w, h, neck = rng.uniform(0.14, 0.3), rng.uniform(0.4, 0.65), rng.uniform(0.0, 0.35)
        ops = [("poly", _rect(-1.0, -w, neck, w), 255), ("poly", np.array([[neck, -h], [1.0, 0.0], [neck, h]]), 255)]
        if rng.random() < 0.5:  # a notched tail
            ops.append(("poly", np.array([[-1.05, -w - 0.05], [-0.75, 0.0], [-1.05, w + 0.05]]), 0))
    elif kind == "house":
        roof = rng.uniform(-0.95, -0.6)
        door = rng.uniform(-0.45, 0.2)
        ops = [
            ("poly", _rect(-0.7, -0.15, 0.7, 0.9), 255),
            ("poly", np.array([[-0.9, -0.1], [0.0, roof], [0.9, -0.1]]), 255),
            ("poly", _rect(0.35, roof * 0.8, 0.55, -0.2), 255),  # chimney
            ("poly", _rect(door, 0.35, door + 0.25, 0.9), 0),  # door
        ]
    elif kind == "keyhole":
        r = rng.uniform(0.4, 0.55)
        ops = [
            ("circle", (0.0, -0.4), r, 255),
            ("poly", np.array([[-0.15, -0.4], [0.15, -0.4], [0.4, 0.95], [-0.4, 0.95]]), 255),
        ]
    elif kind == "flag":
        top = rng.uniform(0.3, 0.6)
        ops = [("poly", _rect(-0.75, -1.0, -0.55, 1.0), 255)]
        if rng.random() < 0.5:
            ops.append(("poly", np.array([[-0.6, -1.0], [0.95, -1.0 + top / 2], [-0.6, -1.0 + top + 0.3]]), 255))
        else:
            ops.append(("poly", _rect(-0.6, -1.0, 0.9, -0.2), 255))
            ops.append(("poly", np.array([[0.91, -1.0], [0.5, -0.6], [0.91, -0.19]]), 0))
    elif kind == "tetromino":
        cells = {
            "L": [(0, 0), (0, 1), (0, 2), (1, 2)],
            "J": [(1, 0), (1, 1), (1, 2), (0, 2)],
            "T": [(0, 0), (1, 0), (2, 0), (1, 1)],
        }
        cs = cells[str(rng.choice(list(cells)))]
        size = 0.62
        cx = np.mean([c[0] for c in cs]) + 0.5
        cy = np.mean([c[1] for c in cs]) + 0.5
        ops = [
            ("poly", _rect((x - cx) * size, (y - cy) * size, (x + 1 - cx) * size, (y + 1 - cy) * size), 255)
            for x, y in cs
        ]
    elif kind == "bolt":
        pts = np.array(
            [[-0.2, -1.0], [0.55, -1.0], [0.15, -0.2], [0.55, -0.2], [-0.35, 1.0], [-0.05, 0.1], [-0.5, 0.1]]
        )
        pts[:, 0] += rng.uniform(-0.1, 0.1, len(pts))
        ops = [("poly", pts, 255)]
    else:  # mug
        ops = [
            ("poly", _rect(-0.75, -0.7, 0.35, 0.8), 255),
            ("circle", (0.4, 0.05), 0.45, 255),
            ("circle", (0.4, 0.05), 0.25, 0),
            ("poly", _rect(-0.62, -0.55, 0.22, 0.68), 255),
        ]
    return _Shape("icon", ops)


def _text_shape(rng: np.random.Generator, family: str, text: str, height: float) -> _Shape:
    font = int(rng.choice(_FONTS))
    if rng.random() < 0.3:
        font |= cv2.FONT_ITALIC
    stroke = height * rng.uniform(0.1, 0.2)
    return _Shape(family, [("text", text, font, height, (0.0, 0.0), 255)], stroke=stroke, min_stroke_px=1.8)


def _glyph(rng: np.random.Generator) -> _Shape:
    return _text_shape(rng, "glyph", str(rng.choice(list(_ASYMMETRIC_CHARS))), 1.5)


def _word(rng: np.random.Generator, letters: int) -> _Shape:
    text = "".join(rng.choice(list(_ASYMMETRIC_CHARS), letters))
    return _text_shape(rng, "word", text, 1.5 / letters + 0.25)


def _outline(rng: np.random.Generator) -> _Shape:
    kind = rng.choice(["polygon", "spiral", "zigzag", "star"])
    closed = kind in ("polygon", "star")
    if kind == "polygon":
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = _ring_points(rng.uniform(0.5, 1.0, n), angles)
    elif kind == "spiral":
        turns = rng.uniform(1.3, 2.6)
        th = np.linspace(0, 2 * np.pi * turns, 160)
        pts = _ring_points(0.12 + 0.88 * th / th[-1], th)
    elif kind == "zigzag":
        n = int(rng.integers(4, 8))
        xs = np.linspace(-1.0, 1.0, n)
        ys = np.where(np.arange(n) % 2 == 0, -1.0, 1.0) * rng.uniform(0.2, 0.7, n)
        pts = np.stack([xs, ys], axis=1)
    else:
        n = int(rng.integers(5, 8))
        radii = np.empty(2 * n)
        radii[0::2] = rng.uniform(0.7, 0.8, n)
        radii[1::2] = rng.uniform(0.3, 0.45, n)
        radii[0] = 1.0
        pts = _ring_points(radii, np.arange(2 * n) * np.pi / n)
    return _Shape("outline", [("lines", pts, closed, 255)], stroke=rng.uniform(0.07, 0.16), min_stroke_px=1.6)


def _cross(rng: np.random.Generator) -> _Shape:
    w = rng.uniform(0.22, 0.38) / 2
    arms = rng.uniform(0.5, 0.72, 4)
    arms[int(rng.integers(4))] = rng.uniform(0.95, 1.15)  # one longer arm
    left, right, up, down = arms
    ops: list = [("poly", _rect(-left, -w, right, w), 255), ("poly", _rect(-w, -up, w, down), 255)]
    if rng.random() < 0.35:  # rounded ends
        ops += [("circle", c, w, 255) for c in ((-left, 0.0), (right, 0.0), (0.0, -up), (0.0, down))]
    return _Shape("cross", ops)


def _holed_plate(rng: np.random.Generator) -> _Shape:
    if rng.random() < 0.5:
        n = int(rng.integers(5, 9))
        th = np.arange(n) * 2 * np.pi / n + rng.uniform(-0.15, 0.15, n)
        plate = _ring_points(rng.uniform(0.9, 1.0, n), th)
    else:
        p = rng.uniform(3.0, 8.0)
        b = rng.uniform(0.6, 1.0)
        th = np.linspace(0, 2 * np.pi, 120, endpoint=False)
        c, s = np.cos(th), np.sin(th)
        plate = np.stack([np.sign(c) * np.abs(c) ** (2 / p), b * np.sign(s) * np.abs(s) ** (2 / p)], axis=1) * 0.95
    ops: list = [("poly", plate, 255)]
    holes: list[tuple[float, float, float]] = []
    for _ in range(30):
        if len(holes) >= int(rng.integers(1, 4)) + 1:
            break
        r = rng.uniform(0.1, 0.22)
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.55)
        x, y = d * math.cos(a), d * math.sin(a) * 0.7
        if all(math.hypot(x - hx, y - hy) > r + hr + 0.08 for hx, hy, hr in holes):
            holes.append((x, y, r))
    for x, y, r in holes:
        if rng.random() < 0.7:
            ops.append(("circle", (x, y), r, 0))
        else:
            ops.append(("poly", _rect(x - r, y - r, x + r, y + r), 0))
    return _Shape("holed_plate", ops)


def _spiky_star(rng: np.random.Generator) -> _Shape:
    n = int(rng.integers(5, 10))
    radii = np.empty(2 * n)
    radii[0::2] = rng.uniform(0.62, 0.75, n)
    radii[1::2] = rng.uniform(0.3, 0.5) + rng.uniform(-0.04, 0.04, n)
    radii[2 * int(rng.integers(n))] = rng.uniform(0.95, 1.05)  # the odd spike
    return _Shape("spiky_star", [("poly", _ring_points(radii, np.arange(2 * n) * np.pi / n), 255)])


def _broken_ring(rng: np.random.Generator) -> _Shape:
    inner = rng.uniform(0.5, 0.72)
    gap = rng.uniform(0.5, 1.2)
    phi = rng.uniform(0, 2 * np.pi)
    th = np.linspace(phi + gap / 2, phi + 2 * np.pi - gap / 2, 120)
    ring = np.concatenate([_ring_points(1.0, th), _ring_points(inner, th[::-1])])
    ops: list = [("poly", ring, 255)]
    if rng.random() < 0.5:  # a dot inside, away from the gap
        a = phi + np.pi + rng.uniform(-0.8, 0.8)
        ops.append(("circle", (0.25 * inner * math.cos(a), 0.25 * inner * math.sin(a)), 0.3 * inner, 255))
    return _Shape("broken_ring", ops)


def _make_shape(rng: np.random.Generator, family: str, size: str) -> _Shape:
    builders = {
        "superellipse": _superellipse,
        "fourier_blob": _fourier_blob,
        "spline_blob": _spline_blob,
        "crescent": _crescent,
        "icon": _icon,
        "glyph": _glyph,
        "word": lambda r: _word(r, 2 if size == "tiny" else int(r.integers(2, 4))),
        "outline": _outline,
        "cross": _cross,
        "holed_plate": _holed_plate,
        "spiky_star": _spiky_star,
        "broken_ring": _broken_ring,
    }
    return builders[family](rng)


def _distractor_shape(rng: np.random.Generator) -> _Shape:
    """Any static shape: symmetric ones (discs, squares, rings) are fine here, they never move."""
    kind = rng.choice(["disc", "ring", "square", "blob", "family"])
    if kind == "disc":
        return _Shape("disc", [("circle", (0.0, 0.0), 1.0, 255)])
    if kind == "ring":
        return _Shape("ring", [("circle", (0.0, 0.0), 1.0, 255), ("circle", (0.0, 0.0), rng.uniform(0.5, 0.8), 0)])
    if kind == "square":
        return _Shape("square", [("poly", _rect(-0.8, -0.8, 0.8, 0.8), 255)])
    if kind == "blob":
        return _fourier_blob(rng)
    family = str(rng.choice([f for f in SHAPE_FAMILIES if f != "word"]))
    return _make_shape(rng, family, "medium")


def _text_box(op: tuple, scale: float, stroke: float) -> tuple[float, float, int, int, float]:
    """(font scale, thickness px, width px, height px, baseline px) of a text op at ``scale`` px per unit."""
    _, text, font, height, _, _ = op
    (_, h1), _ = cv2.getTextSize(text, font, 1.0, 1)
    font_scale = height * scale / max(h1, 1)
    thickness = max(1, round(stroke * scale))
    (w, h), base = cv2.getTextSize(text, font, font_scale, thickness)
    return font_scale, thickness, w, h, base


def _rasterize(
    shape: _Shape, scale: float, stroke: float, origin: tuple[float, float]
) -> tuple[np.ndarray, tuple[float, float]]:
    """The shape's anti-aliased coverage mask, (h, w) uint8 0-255, at ``scale`` px per unit, tightly cropped, and
    the pixel position (x, y) of the unit point ``origin``."""
    ox, oy = origin
    bound = 0.0
    for op in shape.ops:
        if op[0] in ("poly", "lines"):
            r = float(np.max(np.hypot(op[1][:, 0] - ox, op[1][:, 1] - oy))) * scale
            bound = max(bound, r + (stroke * scale if op[0] == "lines" else 0.0))
        elif op[0] == "circle":
            bound = max(bound, (math.hypot(op[1][0] - ox, op[1][1] - oy) + op[2]) * scale)
        else:
            _, thick, w, h, base = _text_box(op, scale, stroke)
            bound = max(bound, math.hypot(op[4][0] - ox, op[4][1] - oy) * scale + math.hypot(w, h + base) / 2 + thick)
    half = int(math.ceil(bound)) + 4
    mask = np.zeros((2 * half, 2 * half), np.uint8)

    def pixels(pts: np.ndarray) -> np.ndarray:
        return np.round(((np.asarray(pts, np.float64) - (ox, oy)) * scale + half) * 16).astype(np.int32)

    for op in shape.ops:
        if op[0] == "poly":
            cv2.fillPoly(mask, [pixels(op[1])], int(op[2]), cv2.LINE_AA, 4)
        elif op[0] == "lines":
            width = max(1, round(stroke * scale))
            cv2.polylines(mask, [pixels(op[1])], bool(op[2]), int(op[3]), width, cv2.LINE_AA, 4)
        elif op[0] == "circle":
            center = pixels(np.array([op[1]]))[0]
            cv2.circle(
                mask,
                (int(center[0]), int(center[1])),
                max(1, round(op[2] * scale * 16)),
                int(op[3]),
                -1,
                cv2.LINE_AA,
                4,
            )
        else:
            font_scale, thick, w, h, base = _text_box(op, scale, stroke)
            cx = (op[4][0] - ox) * scale + half
            cy = (op[4][1] - oy) * scale + half
            org = (round(cx - w / 2), round(cy + (h - base) / 2))
            cv2.putText(mask, op[1], org, op[2], font_scale, int(op[5]), thick, cv2.LINE_AA)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return mask, (half, half)
    x0, y0 = max(int(xs.min()) - 2, 0), max(int(ys.min()) - 2, 0)
    x1, y1 = min(int(xs.max()) + 3, 2 * half), min(int(ys.max()) + 3, 2 * half)
    return mask[y0:y1, x0:x1], (half - x0, half - y0)


@dataclass
class _Geometry:
    """A shape's measured geometry in units, relative to its centroid (the pivot)."""

    centroid: tuple[float, float]  # unit position of the centroid in the shape's own coordinates
    points: np.ndarray  # (N, 2) covered points, relative to the centroid
    hull_area: float  # unit^2

    def box(self, angle: float, scale: float) -> tuple[float, float, float, float]:
        """Axis-aligned extents (x0, x1, y0, y1) in px around the pivot, rotated by ``angle`` (rad), at ``scale``."""
        c, s = math.cos(angle), math.sin(angle)
        x = (c * self.points[:, 0] - s * self.points[:, 1]) * scale
        y = (s * self.points[:, 0] + c * self.points[:, 1]) * scale
        pad = scale * 0.5 / _MEASURE_SCALE
        return float(x.min()) - pad, float(x.max()) + pad, float(y.min()) - pad, float(y.max()) + pad

    def radius(self, scale: float) -> float:
        return float(np.max(np.hypot(self.points[:, 0], self.points[:, 1]))) * scale + scale * 0.5 / _MEASURE_SCALE


def _measure(shape: _Shape, stroke: float) -> _Geometry:
    mask, (px, py) = _rasterize(shape, _MEASURE_SCALE, stroke, (0.0, 0.0))
    m = cv2.moments(mask)
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    ys, xs = np.nonzero(mask >= 96)
    pts = np.stack([(xs - cx) / _MEASURE_SCALE, (ys - cy) / _MEASURE_SCALE], axis=1)
    hull = cv2.convexHull(pts.astype(np.float32))
    return _Geometry(((cx - px) / _MEASURE_SCALE, (cy - py) / _MEASURE_SCALE), pts, float(cv2.contourArea(hull)))


# ---------------------------------------------------------------------------------------------------- plan


@dataclass
class _Plan:
    """Everything a clip's pixels and encoding follow from."""

    clip: DrawnClip
    seed: int
    class_number: int
    index: int
    shape: _Shape
    geometry: _Geometry
    stroke: float
    square: tuple[int, int, int]  # x0, y0, side of the central square
    kind: str  # "translate" | "rotate" | "scale"
    theta0: float  # initial orientation (rad)
    pos0: tuple[float, float]  # pivot position at the start (px)
    delta: tuple[float, float]  # translation over the whole clip (px)
    spin: float  # signed rotation over the whole clip (rad); > 0 is clockwise on screen
    s0: float  # scale (px per unit) at the start
    s1: float  # ... and at the end
    exp_scale: bool  # scale interpolated exponentially (else linearly)
    easing: tuple[str, float, float, int]  # name, weight, wobble amplitude, wobble cycles
    encoding: tuple[str, ...]  # ffmpeg output arguments
    rate: Fraction

    def progress(self) -> np.ndarray:
        """The motion's progress p(t) in [0, 1] for each frame: strictly increasing, p(0) = 0, p(1) = 1."""
        name, weight, amp, cycles = self.easing
        t = np.linspace(0.0, 1.0, self.clip.num_frames)
        if name == "smoothstep":
            e = t * t * (3 - 2 * t)
        elif name == "sine":
            e = 0.5 - 0.5 * np.cos(np.pi * t)
        elif name == "ease_in":
            e = t * t
        elif name == "ease_out":
            e = 1 - (1 - t) ** 2
        elif name == "wobble":
            e = t + amp * np.sin(2 * np.pi * cycles * t) / (2 * np.pi * cycles)
        else:
            e = t
        return (1 - weight) * t + weight * e  # the linear share keeps the speed above (1 - weight) of its mean

    def poses(self) -> list[tuple[float, float, float, float]]:
        """(x, y, scale px/unit, angle rad) of the pivot for each frame."""
        out = []
        for p in self.progress():
            s = self.s0 * (self.s1 / self.s0) ** p if self.exp_scale else self.s0 + (self.s1 - self.s0) * p
            out.append(
                (self.pos0[0] + p * self.delta[0], self.pos0[1] + p * self.delta[1], s, self.theta0 + p * self.spin)
            )
        return out


def _rngs(seed: int, class_number: int, index: int) -> list[np.random.Generator]:
    """Independent streams: geometry, encoding, background, look (colours, distractors), effects."""
    return [np.random.default_rng([seed, class_number, index, _SALT, k]) for k in range(5)]


def _class_number(motion: str) -> int:
    if motion not in MOTION_CLASSES:
        raise ValueError(f"unknown motion {motion!r}; known: {', '.join(MOTION_CLASSES)}")
    return MOTION_CLASSES.index(motion)


def _encoding(codec: str, rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
    """(container, ffmpeg output args) for a codec family, with drawn quality settings."""
    yuv = ("-pix_fmt", "yuv420p")
    if codec == "h264":
        crf = int(rng.integers(38, 46)) if rng.random() < 0.3 else int(rng.integers(18, 31))
        args = ("-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-bf", str(int(rng.integers(0, 4))))
        return str(rng.choice(["mp4", "mp4", "mp4", "mov"])), (
            *args,
            "-g",
            str(int(rng.choice([12, 30, 60, 250]))),
            *yuv,
        )
    if codec == "hevc":
        params = "log-level=error:pools=1:frame-threads=1"
        return "mkv", (
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-crf",
            str(int(rng.integers(24, 37))),
            "-x265-params",
            params,
            *yuv,
        )
    if codec == "vp8":
        rate = f"{int(rng.integers(150, 900))}k"
        return "webm", (
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            rate,
            "-auto-alt-ref",
            "0",
            *yuv,
        )
    if codec == "vp9":
        crf = str(int(rng.integers(28, 52)))
        return "webm", (
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-crf",
            crf,
            "-b:v",
            "0",
            "-row-mt",
            "0",
            *yuv,
        )
    if codec == "mpeg4":
        quality = ("-b:v", "150k") if rng.random() < 0.3 else ("-q:v", str(int(rng.integers(12, 26))))
        tag = ("-vtag", "xvid") if rng.random() < 0.5 else ()
        return "avi", ("-c:v", "mpeg4", *quality, *tag, *yuv)
    if codec == "mpeg2":
        quality = (
            ("-b:v", f"{int(rng.integers(250, 1200))}k")
            if rng.random() < 0.4
            else ("-q:v", str(int(rng.integers(4, 17))))
        )
        return str(rng.choice(["mpg", "ts"])), (
            "-c:v",
            "mpeg2video",
            *quality,
            "-g",
            str(int(rng.choice([12, 15]))),
            "-bf",
            "2",
            *yuv,
        )
    if codec == "mjpeg":
        pix = str(rng.choice(["yuvj420p", "yuvj422p"]))
        return str(rng.choice(["avi", "mov"])), (
            "-c:v",
            "mjpeg",
            "-q:v",
            str(int(rng.integers(3, 21))),
            "-pix_fmt",
            pix,
        )
    if codec == "theora":
        keyint = str(int(rng.choice([32, 64, 128, 250])))
        return "ogv", ("-c:v", "libtheora", "-q:v", str(int(rng.integers(3, 9))), "-g", keyint, *yuv)
    raise ValueError(f"unknown codec family {codec!r}")


_Placement = tuple[tuple[float, float], tuple[float, float], float, float, float, float, float]


def _place(
    kind: str,
    motion: str,
    size: str,
    geometry: _Geometry,
    square: tuple[int, int, int],
    u: np.ndarray,
) -> _Placement:
    """Fits the motion in the central square: (pos0, delta, spin, s0, s1, theta0, amount) from uniforms ``u``.

    Objects stay inside the square (less a small margin); an object whose hull covers 40% of the square or more
    may poke out where it has to, by at most 15% of its extent per side and with at least 80% of its area inside
    the square in every frame. Otherwise the object is drawn smaller.
    """
    for attempt in range(60):
        placement = _place_once(kind, motion, size, geometry, square, u, 0.96**attempt)
        if _mostly_inside(geometry, square, placement):
            return placement
    return placement


def _mostly_inside(geometry: _Geometry, square: tuple[int, int, int], placement: _Placement) -> bool:
    """Whether at least 80% of the object's area lies in the square at a dozen poses along the motion."""
    (x, y), (dx, dy), spin, s0, s1, theta0, _ = placement
    sx, sy, side = square
    pts = geometry.points[:: max(1, len(geometry.points) // 1500)]
    for p in np.linspace(0.0, 1.0, 13):
        a, s = theta0 + p * spin, s0 * (s1 / s0) ** p
        c, sn = math.cos(a), math.sin(a)
        px = x + p * dx + s * (c * pts[:, 0] - sn * pts[:, 1])
        py = y + p * dy + s * (sn * pts[:, 0] + c * pts[:, 1])
        inside = (px >= sx) & (px <= sx + side) & (py >= sy) & (py <= sy + side)
        if inside.mean() < 0.8:
            return False
    return True


def _place_once(
    kind: str,
    motion: str,
    size: str,
    geometry: _Geometry,
    square: tuple[int, int, int],
    u: np.ndarray,
    shrink: float,
) -> _Placement:
    sx, sy, side = square
    margin = max(3.0, 0.02 * side)  # leaves room for a 2 px contrast outline and resampling
    room = side - 2 * margin
    lo_area, hi_area = _AREA[size]
    s_ref = shrink * side * math.sqrt((lo_area + (hi_area - lo_area) * u[0]) / geometry.hull_area)
    theta0 = 2 * np.pi * u[1]

    def allowance(scale: float, extent: float) -> float:
        large = geometry.hull_area * scale * scale >= _LARGE * side * side
        return _POKE * extent if large else 0.0

    def start(origin: float, lo: float, hi: float, move: float, v: float) -> float:
        """The pivot's start coordinate keeping [lo, hi] (extents around the pivot) in the square all the way,
        poking out evenly on both sides when the sweep is wider than the square."""
        need = hi - lo + abs(move)
        first = origin + margin - lo - min(0.0, move)
        if need > room:
            return first - (need - room) / 2
        return first + (room - need) * v

    if kind == "translate":
        axis = {"moving right": 0.0, "moving down": 90.0, "moving left": 180.0, "moving up": -90.0}[motion]
        heading = math.radians(axis + 16.0 * (u[2] - 0.5))
        d = (math.cos(heading), math.sin(heading))
        s = s_ref
        for _ in range(60):
            x0, x1, y0, y1 = geometry.box(theta0, s)
            free_x = room + 2 * allowance(s, x1 - x0) - (x1 - x0)
            free_y = room + 2 * allowance(s, y1 - y0) - (y1 - y0)
            reach = min(free_x / max(abs(d[0]), 1e-6), free_y / max(abs(d[1]), 1e-6))
            if reach >= 0.2 * side:
                break
            s *= 0.96
        amount = 0.2 + (min(0.7, reach / side) - 0.2) * u[3]
        delta = (amount * side * d[0], amount * side * d[1])
        pos0 = (start(sx, x0, x1, delta[0], u[4]), start(sy, y0, y1, delta[1], u[5]))
        return pos0, delta, 0.0, s, s, theta0, amount

    if kind == "rotate":
        s = s_ref
        for _ in range(60):
            r = geometry.radius(s)
            if 2 * r - 2 * allowance(s, r) <= room:
                break
            s *= 0.96
        amount = 30.0 * (400.0 / 30.0) ** u[3]  # log-uniform 30-400 degrees
        pos0 = (start(sx, -r, r, 0.0, u[4]), start(sy, -r, r, 0.0, u[5]))
        sign = 1.0 if motion == "rotating clockwise" else -1.0
        return pos0, (0.0, 0.0), sign * math.radians(amount), s, s, theta0, amount

    # scale: the size category names the small end for "tiny", the geometric mean for "medium", the big end for "large"
    ratio = 1.2 * (5.0 / 1.2) ** u[3]
    big = {"tiny": s_ref * ratio, "medium": s_ref * math.sqrt(ratio), "large": s_ref}[size]
    for _ in range(80):
        x0, x1, y0, y1 = geometry.box(theta0, big)
        if x1 - x0 - 2 * allowance(big, x1 - x0) <= room and y1 - y0 - 2 * allowance(big, y1 - y0) <= room:
            break
        if size == "tiny" and ratio > 1.25:
            ratio = max(1.2, ratio * 0.95)
            big = s_ref * ratio
        else:
            big *= 0.96
    small = big / ratio
    pos0 = (start(sx, x0, x1, 0.0, u[4]), start(sy, y0, y1, 0.0, u[5]))
    s0, s1 = (small, big) if motion == "growing" else (big, small)
    return pos0, (0.0, 0.0), 0.0, s0, s1, theta0, ratio


def _plan(motion: str, seed: int, index: int) -> _Plan:
    class_number = _class_number(motion)
    if index < 0 or seed < 0:
        raise ValueError("seed and index must be >= 0")
    geo, enc, *_ = _rngs(seed, class_number, index)
    codec = CODEC_FAMILIES[(index + class_number) % len(CODEC_FAMILIES)]
    size = SIZES[(index + 2 * class_number) % len(SIZES)]
    if index % 2 == 0:
        background = BUSY_BACKGROUNDS[(index // 2 + 3 * class_number) % len(BUSY_BACKGROUNDS)]
    elif geo.random() < 0.5:
        background = str(geo.choice(CALM_BACKGROUNDS))
    else:
        background = str(geo.choice(BUSY_BACKGROUNDS))

    rate = FRAME_RATES[int(geo.integers(len(FRAME_RATES)))]
    duration = geo.uniform(3.0, 4.0)
    num_frames = int(np.clip(round(duration * rate), math.ceil(3 * rate), math.floor(4 * rate)))
    short = 2 * int(geo.integers(48, 121))
    aspect = float(geo.choice(ASPECTS))
    long = min(400, 2 * round(short * max(aspect, 1 / aspect) / 2))
    width, height = (long, short) if aspect >= 1 else (short, long)
    square = ((width - short) // 2, (height - short) // 2, short)

    kind = "translate" if motion.startswith("moving") else "rotate" if motion.startswith("rotating") else "scale"
    u = geo.random(6)
    easing_name = str(geo.choice(_EASINGS))
    easing = (easing_name, float(geo.uniform(0.3, 0.65)), float(geo.uniform(0.4, 1.0)), int(geo.integers(1, 4)))
    exp_scale = bool(geo.random() < 0.6)

    families = [f for f in SHAPE_FAMILIES if not (size == "large" and f == "word")]
    for _ in range(6):  # a large object too elongated to stay mostly in the square at 40% is drawn anew
        family = str(geo.choice(families))
        shape = _make_shape(geo, family, size)
        stroke = shape.stroke
        for _ in range(3):  # strokes at least min_stroke_px wide on screen, even at the smallest scale
            geometry = _measure(shape, stroke)
            pos0, delta, spin, s0, s1, theta0, amount = _place(kind, motion, size, geometry, square, u)
            needed = shape.min_stroke_px / min(s0, s1)
            if needed <= stroke * 1.02:
                break
            stroke = min(needed, 0.35)
        if size != "large" or geometry.hull_area * max(s0, s1) ** 2 >= _LARGE * short * short:
            break
    shape = _Shape(shape.family, shape.ops, stroke, shape.min_stroke_px)

    container, encoding = _encoding(codec, enc)
    clip = DrawnClip(
        motion=motion,
        shape=family,
        size=size,
        background=background,
        codec=codec,
        container=container,
        width=width,
        height=height,
        fps=float(rate),
        num_frames=num_frames,
        amount=round(float(amount), 4),
    )
    return _Plan(
        clip, seed, class_number, index, shape, geometry, stroke, square, kind, theta0, pos0, delta, spin, s0, s1,
        exp_scale, easing, encoding, rate,
    )  # fmt: skip


def describe(motion: str, seed: int, index: int) -> DrawnClip:
    """The description of clip ``(seed, motion, index)`` without rendering it (cheap: milliseconds)."""
    return _plan(motion, seed, index).clip


# ------------------------------------------------------------------------------------------------- sprites


@dataclass
class _Sprite:
    """A premultiplied RGBA image pyramid: levels (h, w, 4) float32 [0, 1], halving in size."""

    levels: list[np.ndarray]
    pivot: tuple[float, float]  # level-0 pixel position of the pivot
    scale: float  # level-0 px per unit

    def warp(self, frame_shape: tuple[int, int], x: float, y: float, s: float, angle: float, pad: int = 0):
        """The sprite placed with its pivot at (x, y), ``s`` frame px per unit, turned by ``angle`` (clockwise on
        screen for > 0): (x0, y0, roi (h, w, 4) float32) or None when it falls outside the frame."""
        ratio = s / self.scale
        level = 0
        while level + 1 < len(self.levels) and ratio * 2 ** (level + 1) <= 1.0:
            level += 1
        f = 2**level
        src = self.levels[level]
        pvx, pvy = (self.pivot[0] + 0.5) / f - 0.5, (self.pivot[1] + 0.5) / f - 0.5
        k = ratio * f
        c, sn = math.cos(angle) * k, math.sin(angle) * k
        a = np.array([[c, -sn], [sn, c]])
        b = np.array([x, y]) - a @ np.array([pvx, pvy])
        h, w = src.shape[:2]
        corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]]) @ a.T + b
        height, width = frame_shape
        x0 = max(int(math.floor(corners[:, 0].min())) - 1 - pad, 0)
        y0 = max(int(math.floor(corners[:, 1].min())) - 1 - pad, 0)
        x1 = min(int(math.ceil(corners[:, 0].max())) + 2 + pad, width)
        y1 = min(int(math.ceil(corners[:, 1].max())) + 2 + pad, height)
        if x1 <= x0 or y1 <= y0:
            return None
        m = np.hstack([a, (b - (x0, y0))[:, None]])
        roi = cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return x0, y0, roi


def _unit_grid(shape: tuple[int, int], pivot: tuple[float, float], scale: float) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return (xs - pivot[0]) / scale, (ys - pivot[1]) / scale


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float, octaves: int = 1) -> np.ndarray:
    """Smooth noise (h, w) float32 in [0, 1]: bicubic-upsampled random grids, ``cells`` across the long side."""
    h, w = shape
    total = np.zeros(shape, np.float32)
    weight = 1.0
    for o in range(octaves):
        n = cells * 2**o
        gh, gw = max(2, int(round(n * h / max(h, w))) + 2), max(2, int(round(n * w / max(h, w))) + 2)
        grid = rng.random((gh, gw)).astype(np.float32)
        total += weight * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        weight *= 0.5
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _texture(
    rng: np.random.Generator, kind: str, shape: tuple[int, int], pivot: tuple[float, float], scale: float
) -> np.ndarray:
    """Mixing weight (h, w, 1) float32 in [0, 1] between an object's two colours, in the object's own frame."""
    xs, ys = _unit_grid(shape, pivot, scale)
    period = rng.uniform(0.22, 0.55)
    a = rng.uniform(0, np.pi)
    if kind == "linear":
        t = (xs * math.cos(a) + ys * math.sin(a)) / 2.4 + 0.5
    elif kind == "radial":
        t = np.hypot(xs - rng.uniform(-0.4, 0.4), ys - rng.uniform(-0.4, 0.4)) / 1.3
    elif kind == "dots":
        fx, fy = np.mod(xs, period) - period / 2, np.mod(ys, period) - period / 2
        t = (period * rng.uniform(0.2, 0.35) - np.hypot(fx, fy)) * scale + 0.5
    elif kind == "plaid":
        t = 0.5 * (np.cos(2 * np.pi * xs / period) > 0.2) + 0.5 * (np.cos(2 * np.pi * ys / (period * 1.3)) > 0.4)
    elif kind == "hatch":
        t = (np.sin(2 * np.pi * (xs * math.cos(a) + ys * math.sin(a)) / period) > 0.3).astype(np.float32)
    elif kind == "noise":
        t = _value_noise(rng, shape, max(3.0, 2.2 * max(shape) / scale), 2)
    elif kind == "checker":
        t = (np.floor(xs / period) + np.floor(ys / period)) % 2
    else:
        t = np.zeros(shape, np.float32)
    return np.clip(t, 0.0, 1.0).astype(np.float32)[..., None]


def _sprite(
    shape: _Shape,
    stroke: float,
    origin: tuple[float, float],
    scale: float,
    colours: tuple[np.ndarray, np.ndarray],
    texture: str,
    rng: np.random.Generator,
) -> _Sprite:
    """Rasterises, textures and pyramids a shape at ``scale`` px per unit; the pivot is the mask's centroid."""
    mask, _ = _rasterize(shape, scale, stroke, origin)
    m = cv2.moments(mask)
    pivot = (m["m10"] / max(m["m00"], 1e-6), m["m01"] / max(m["m00"], 1e-6))
    h, w = mask.shape
    levels = 1
    while levels < 4 and min(h, w) >= 2**levels * 6:
        levels += 1
    f = 2 ** (levels - 1)
    hp, wp = -(-h // f) * f, -(-w // f) * f
    alpha = np.zeros((hp, wp), np.float32)
    alpha[:h, :w] = mask.astype(np.float32) / 255.0
    t = _texture(rng, texture, (hp, wp), pivot, scale)
    colour = colours[0][None, None, :] * (1 - t) + colours[1][None, None, :] * t
    rgba = np.concatenate([colour * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
    pyramid = [rgba]
    for _ in range(levels - 1):
        prev = pyramid[-1]
        pyramid.append(cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA))
    return _Sprite(pyramid, pivot, scale)


def _composite(frame: np.ndarray, placed, outline: tuple[int, np.ndarray] | None = None) -> None:
    """Blends a warped sprite ``(x0, y0, roi)`` over ``frame`` (H, W, 3) float32 in place, with an optional outline
    ``(width px, colour)`` drawn just outside the sprite's coverage."""
    if placed is None:
        return
    x0, y0, roi = placed
    h, w = roi.shape[:2]
    target = frame[y0 : y0 + h, x0 : x0 + w]
    alpha = roi[..., 3:4]
    colour = roi[..., :3]
    if outline is not None:
        width, ring_colour = outline
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
        grown = cv2.dilate(roi[..., 3], kernel)[..., None]
        colour = colour + ring_colour * (grown - alpha)
        alpha = grown
    target *= 1.0 - alpha
    target += colour


# ------------------------------------------------------------------------------------------------- backgrounds


def _colour(
    rng: np.random.Generator, sat: tuple[float, float] = (0.0, 1.0), val: tuple[float, float] = (0.05, 1.0)
) -> np.ndarray:
    h = rng.random()
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def _nearby(rng: np.random.Generator, base: np.ndarray, contrast: float) -> np.ndarray:
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction) + 1e-9
    out = base + contrast * direction
    if np.linalg.norm(np.clip(out, 0, 1) - base) < 0.5 * contrast:
        out = base - contrast * direction
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _palette(rng: np.random.Generator, n: int, contrast: float) -> np.ndarray:
    base = _colour(rng, val=(0.2, 0.9))
    return np.stack([base] + [_nearby(rng, base, contrast * rng.uniform(0.6, 1.0)) for _ in range(n - 1)])


def _supersampled(fn, height: int, width: int, factor: int = 2) -> np.ndarray:
    """Draws a hard-edged pattern ``fn(xs, ys)`` (coordinates in frame px) at ``factor`` x and averages it down."""
    ys, xs = np.mgrid[0 : height * factor, 0 : width * factor].astype(np.float32)
    img = fn((xs + 0.5) / factor - 0.5, (ys + 0.5) / factor - 0.5).astype(np.float32)
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def _background(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static background (H, W, 3) float32 RGB in [0, 1]."""
    shape = (height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(_colour(rng), (height, width, 3)).astype(np.float32)
    if kind == "gradient":
        c0, c1 = _colour(rng), _colour(rng)
        a = rng.uniform(0, 2 * np.pi)
        t = xs * math.cos(a) + ys * math.sin(a)
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
        return c0 * (1 - t) + c1 * t
    if kind == "radial":
        c0, c1 = _colour(rng), _colour(rng)
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        t = np.clip(np.hypot(xs - cx, ys - cy) / (0.8 * max(height, width)), 0, 1)[..., None]
        return c0 * (1 - t) + c1 * t
    if kind == "haze":
        pal = _palette(rng, 2, rng.uniform(0.06, 0.15))
        t = _value_noise(rng, shape, rng.uniform(2, 5), 2)[..., None]
        return pal[0] * (1 - t) + pal[1] * t
    contrast = rng.uniform(0.18, 0.6)
    if kind in ("checker_fine", "checker_coarse"):
        cell = rng.uniform(3, 7) if kind == "checker_fine" else rng.uniform(10, 40)
        a = rng.uniform(0, np.pi / 2) if rng.random() < 0.4 else 0.0
        ox, oy = rng.uniform(0, cell, 2)
        pal = _palette(rng, 2, contrast)

        def checker(x, y):
            u = (x * math.cos(a) + y * math.sin(a) + ox) / cell
            v = (-x * math.sin(a) + y * math.cos(a) + oy) / cell
            return (np.floor(u) + np.floor(v)) % 2

        t = _supersampled(checker, height, width)[..., None]
        return pal[0] * (1 - t) + pal[1] * t
    if kind == "mosaic":
        pal = _palette(rng, int(rng.integers(3, 7)), contrast)
        cols = np.cumsum(rng.uniform(0.5, 1.5, int(rng.integers(4, 15))))
        rows = np.cumsum(rng.uniform(0.5, 1.5, int(rng.integers(4, 12))))
        xi = np.searchsorted(cols / cols[-1] * width, xs[0] + 0.5)
        yi = np.searchsorted(rows / rows[-1] * height, ys[:, 0] + 0.5)
        labels = rng.integers(len(pal), size=(len(rows) + 1, len(cols) + 1))
        img = pal[labels[yi][:, xi]]
        if rng.random() < 0.5:  # grout lines between the tiles
            grout = _nearby(rng, pal[0], contrast)
            for c in cols[:-1] / cols[-1] * width:
                cv2.line(img, (round(c), 0), (round(c), height), grout.tolist(), 1, cv2.LINE_AA)
            for r in rows[:-1] / rows[-1] * height:
                cv2.line(img, (0, round(r)), (width, round(r)), grout.tolist(), 1, cv2.LINE_AA)
        return img.astype(np.float32)
    if kind == "voronoi":
        n = int(rng.integers(12, 60))
        seeds = rng.random((n, 2)).astype(np.float32) * (width, height)
        pal = _palette(rng, int(rng.integers(3, 8)), contrast)
        colours = pal[rng.integers(len(pal), size=n)]
        sh, sw = (height + 1) // 2, (width + 1) // 2
        gy, gx = np.mgrid[0:sh, 0:sw].astype(np.float32) * 2
        d = (gx[..., None] - seeds[:, 0]) ** 2 + (gy[..., None] - seeds[:, 1]) ** 2
        labels = np.argmin(d, axis=2).astype(np.float32)
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST).astype(np.int64)
        return cv2.GaussianBlur(colours[labels].astype(np.float32), (0, 0), 0.6)
    if kind == "stripes":
        pal = _palette(rng, int(rng.integers(2, 4)), contrast)
        period = rng.uniform(4, 30)
        a = rng.uniform(0, np.pi)
        img = np.zeros((height, width, 3), np.float32)
        for i in range(len(pal)):

            def band(x, y, i=i):
                phase = (x * math.cos(a) + y * math.sin(a)) / period
                return np.floor(phase) % len(pal) == i

            img += _supersampled(band, height, width)[..., None] * pal[i]
        return img
    if kind == "clouds":
        pal = _palette(rng, 3, contrast)
        t = _value_noise(rng, shape, rng.uniform(3, 10), int(rng.integers(2, 5)))[..., None]
        return np.where(t < 0.5, pal[0] * (1 - 2 * t) + pal[1] * 2 * t, pal[1] * (2 - 2 * t) + pal[2] * (2 * t - 1))
    if kind == "dot_grid":
        pal = _palette(rng, 2, contrast * 1.2)
        spacing = rng.uniform(6, 24)
        radius = spacing * rng.uniform(0.15, 0.35)
        hexagonal = rng.random() < 0.5
        ox, oy = rng.uniform(0, spacing, 2)

        def dots(x, y):
            row = np.floor((y + oy) / spacing)
            shift = (row % 2) * spacing / 2 if hexagonal else 0.0
            fx = np.mod(x + ox + shift, spacing) - spacing / 2
            fy = np.mod(y + oy, spacing) - spacing / 2
            return np.hypot(fx, fy) < radius

        t = _supersampled(dots, height, width)[..., None]
        return pal[0] * (1 - t) + pal[1] * t
    if kind == "scribbles":
        img = np.ascontiguousarray(_background("gradient", rng, height, width))
        for _ in range(int(rng.integers(15, 60))):
            c = _colour(rng).tolist()
            thick = int(rng.integers(1, 5))
            if rng.random() < 0.3:
                center = (int(rng.integers(width)), int(rng.integers(height)))
                cv2.circle(img, center, int(rng.integers(4, 40)), c, thick, cv2.LINE_AA)
            else:
                pts = np.cumsum(rng.normal(0, 18, (int(rng.integers(3, 8)), 2)), axis=0) + rng.random(2) * (
                    width,
                    height,
                )
                cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, c, thick, cv2.LINE_AA, 4)
        return img
    raise ValueError(f"unknown background {kind!r}")


# ---------------------------------------------------------------------------------------------------- scene


@dataclass
class _Scene:
    plan: _Plan
    sprite: _Sprite
    background: np.ndarray  # (H, W, 3) float32, distractors included
    outline: tuple[int, np.ndarray] | None
    blur: float  # Gaussian sigma in px, 0 for none
    gains: np.ndarray  # (T,) global brightness per frame
    noise: float  # sensor noise sigma (fraction of full scale), 0 for none
    noise_bank: np.ndarray | None


def _swept_box(plan: _Plan) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), clipped to the frame, of the object over the whole clip."""
    xs, ys = [], []
    poses = plan.poses()
    for x, y, s, a in poses[:: max(1, len(poses) // 24)] + [poses[-1]]:
        b = plan.geometry.box(a, s)
        xs += [x + b[0], x + b[1]]
        ys += [y + b[2], y + b[3]]
    w, h = plan.clip.width, plan.clip.height
    return max(0, int(min(xs))), max(0, int(min(ys))), min(w, int(max(xs)) + 1), min(h, int(max(ys)) + 1)


def _luma(c: np.ndarray) -> np.ndarray:
    return c[..., 0] * 0.299 + c[..., 1] * 0.587 + c[..., 2] * 0.114


def _pick_colour(rng: np.random.Generator, samples: np.ndarray) -> tuple[np.ndarray, float]:
    """An object colour far from most of the background ``samples`` (N, 3): (colour, its contrast score)."""
    candidates = np.stack([_colour(rng) for _ in range(48)])
    d = np.linalg.norm(candidates[:, None, :] - samples[None], axis=2)
    d += 0.6 * np.abs(_luma(candidates)[:, None] - _luma(samples)[None])
    score = np.percentile(d, 15, axis=1)
    good = np.flatnonzero(score >= 0.75 * score.max())
    pick = int(rng.choice(good))
    return candidates[pick], float(score[pick])


def _scene(plan: _Plan) -> _Scene:
    clip = plan.clip
    _, _, bg_rng, look, fx = _rngs(plan.seed, plan.class_number, plan.index)
    h, w = clip.height, clip.width
    background = np.ascontiguousarray(_background(clip.background, bg_rng, h, w), dtype=np.float32)

    # static distractors, kept off the object's path where possible
    sx0, sy0, sx1, sy1 = _swept_box(plan)
    for _ in range(int(look.choice([0, 0, 1, 1, 2, 3]))):
        dshape = _distractor_shape(look)
        dgeo = _measure(dshape, dshape.stroke or 0.1)
        scale = plan.square[2] * math.sqrt(look.uniform(0.008, 0.06) / dgeo.hull_area)
        angle = look.uniform(0, 2 * np.pi)
        r = dgeo.radius(scale)
        for _ in range(12):
            x, y = look.uniform(0, w), look.uniform(0, h)
            if x + r < sx0 or x - r > sx1 or y + r < sy0 or y - r > sy1:
                break
        pair = (_colour(look), _colour(look))
        kind = str(look.choice(_TEXTURES))
        stroke = max(dshape.stroke, 1.5 / scale) if dshape.stroke else 0.0
        sprite = _sprite(dshape, stroke, dgeo.centroid, scale, pair, kind, look)
        _composite(background, sprite.warp((h, w), x, y, scale, angle))

    ys = look.integers(sy0, max(sy1, sy0 + 1), 400)
    xs = look.integers(sx0, max(sx1, sx0 + 1), 400)
    samples = background[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]
    c1, score = _pick_colour(look, samples)
    texture = str(look.choice(_TEXTURES))
    if look.random() < 0.5:
        c2 = _nearby(look, c1, look.uniform(0.15, 0.4))
    else:
        c2 = np.clip(c1 * look.uniform(0.45, 0.75), 0, 1).astype(np.float32)
    busy = clip.background in BUSY_BACKGROUNDS
    outline = None
    if look.random() < (0.5 if busy else 0.15) or score < 0.3:
        light = _luma(c1) < 0.5
        tone = look.uniform(0.85, 1.0) if light else look.uniform(0.0, 0.15)
        ring = np.clip(tone + look.uniform(-0.08, 0.08, 3), 0, 1).astype(np.float32)
        outline = (1 if min(plan.s0, plan.s1) * math.sqrt(plan.geometry.hull_area) < 40 else 2, ring)
    sprite = _sprite(plan.shape, plan.stroke, plan.geometry.centroid, max(plan.s0, plan.s1), (c1, c2), texture, look)

    # camera-like effects
    t = np.linspace(0.0, clip.num_frames / clip.fps, clip.num_frames)
    blur = float(fx.uniform(0.4, 1.1)) if fx.random() < 0.3 else 0.0
    light = fx.choice(["steady", "steady", "drift", "flicker"])
    if light == "drift":
        g0, g1 = fx.uniform(0.85, 1.12, 2)
        gains = g0 + (g1 - g0) * t / t[-1]
    elif light == "flicker":
        gains = 1 + fx.uniform(0.02, 0.07) * np.sin(2 * np.pi * fx.uniform(0.5, 4) * t + fx.uniform(0, 6.3))
        gains += fx.normal(0, fx.uniform(0.0, 0.02), len(t))
    else:
        gains = np.full(len(t), fx.uniform(0.9, 1.08))
    noise = float(fx.uniform(1.5, 6.0) / 255) if fx.random() < 0.5 else 0.0
    bank = fx.standard_normal((4, h + 16, w + 16, 3), dtype=np.float32) * noise if noise else None
    return _Scene(plan, sprite, background, outline, blur, gains.astype(np.float32), noise, bank)


def _frames(scene: _Scene) -> np.ndarray:
    plan = scene.plan
    clip = plan.clip
    h, w = clip.height, clip.width
    out = np.empty((clip.num_frames, h, w, 3), np.uint8)
    jitter = np.random.default_rng([plan.seed, plan.class_number, plan.index, _SALT, 9])
    pad = scene.outline[0] + 1 if scene.outline else 0
    for i, (x, y, s, a) in enumerate(plan.poses()):
        frame = scene.background.copy()
        _composite(frame, scene.sprite.warp((h, w), x, y, s, a, pad), scene.outline)
        if scene.blur:
            frame = cv2.GaussianBlur(frame, (0, 0), scene.blur)
        frame *= scene.gains[i] * 255.0
        if scene.noise_bank is not None:
            k, dy, dx = (int(v) for v in jitter.integers(0, (4, 17, 17)))
            frame += scene.noise_bank[k, dy : dy + h, dx : dx + w] * 255.0
        np.clip(frame + 0.5, 0, 255, out=frame)
        out[i] = frame.astype(np.uint8)
    return out


def render_clip(motion: str, seed: int, index: int) -> tuple[np.ndarray, DrawnClip]:
    """Renders clip ``index`` of class ``motion`` for ``seed``.

    Returns ``(frames, clip)``: frames (T, H, W, 3) uint8 RGB in [0, 255] with T = ``clip.num_frames``,
    H = ``clip.height``, W = ``clip.width``, and the clip's description. A pure function of (seed, motion, index).
    """
    plan = _plan(motion, seed, index)
    return _frames(_scene(plan)), plan.clip


def object_masks(motion: str, seed: int, index: int, pad: int = 0) -> np.ndarray:
    """The moving object's coverage alone, for checks: (T, H + 2 pad, W + 2 pad) float32 in [0, 1], the frame
    padded by ``pad`` px on every side so that nothing is cut off (no outline, background or effects)."""
    plan = _plan(motion, seed, index)
    clip = plan.clip
    colours = (np.ones(3, np.float32), np.ones(3, np.float32))
    rng = np.random.default_rng(0)
    sprite = _sprite(plan.shape, plan.stroke, plan.geometry.centroid, max(plan.s0, plan.s1), colours, "flat", rng)
    h, w = clip.height + 2 * pad, clip.width + 2 * pad
    out = np.zeros((clip.num_frames, h, w), np.float32)
    for i, (x, y, s, a) in enumerate(plan.poses()):
        placed = sprite.warp((h, w), x + pad, y + pad, s, a)
        if placed is not None:
            x0, y0, roi = placed
            out[i, y0 : y0 + roi.shape[0], x0 : x0 + roi.shape[1]] = roi[..., 3]
    return out


# ------------------------------------------------------------------------------------------------- encoding


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("the `ffmpeg` command-line tool is needed to encode drawn clips but is not on PATH")
    return path


def _encode(frames: np.ndarray, plan: _Plan) -> bytes:
    # Theora files may hold empty packets (libtheora's "frame unchanged"); they are kept: real uploads have them.
    return _run_ffmpeg(frames, plan, plan.encoding)


def _run_ffmpeg(frames: np.ndarray, plan: _Plan, encoding: tuple[str, ...]) -> bytes:
    _, h, w, _ = frames.shape
    rate = str(plan.rate)
    with tempfile.TemporaryDirectory(prefix="drawn-motion-") as tmp:
        path = Path(tmp) / f"clip.{plan.clip.container}"
        cmd = [
            _ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", rate, "-i", "pipe:0",
            "-an", *encoding, "-threads", "1", "-r", rate,
            "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", str(path),
        ]  # fmt: skip
        done = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True, check=False)
        if done.returncode != 0 or not path.exists():
            message = done.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"ffmpeg failed to encode a {plan.clip.codec} clip (exit {done.returncode}): {message}")
        return path.read_bytes()


def make_clip(motion: str, seed: int, index: int) -> tuple[bytes, DrawnClip]:
    """Renders and encodes clip ``index`` of class ``motion`` for ``seed``.

    Returns ``(data, clip)``: the encoded video file's bytes (a ``clip.container`` file of codec family
    ``clip.codec``) and the clip's description. A pure function of (seed, motion, index); the bytes may differ only
    between ffmpeg builds. Raises ``RuntimeError`` if ``ffmpeg`` is missing or fails.
    """
    plan = _plan(motion, seed, index)
    return _encode(_frames(_scene(plan)), plan), plan.clip


def suite(seed: int, per_class: int) -> list[tuple[str, int]]:
    """The (motion, index) pairs of an evaluation suite: indices ``0 .. per_class - 1`` of each of the 8 classes
    (class-major). ``seed`` picks the clips' content, not the pairs."""
    if per_class < 0:
        raise ValueError("per_class must be >= 0")
    return [(motion, index) for motion in MOTION_CLASSES for index in range(per_class)]


# ---------------------------------------------------------------------------------------------------- CLI


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="folder to write <motion>/<seed>-<index>.<ext> clips into")
    parser.add_argument("--per-class", type=int, default=10, help="clips per motion class (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="suite seed (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    written = 0
    for motion, index in tqdm(suite(args.seed, args.per_class), unit="clip", desc="drawing"):
        data, clip = make_clip(motion, args.seed, index)
        path = args.root / motion / f"{args.seed}-{index:04d}.{clip.container}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += 1
    print(f"wrote {written} drawn motion clips to {args.root}")
    return 0
