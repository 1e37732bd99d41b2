"""Synthetic motion videos in 8 classes, as a folder-of-folders dataset (``root/<class>/<id>.<ext>``).

Every video shows one object that moves left, right, up or down, rotates clockwise or counterclockwise, grows or
shrinks for the whole video (3-4 s), so any clip window shows the motion, inside the frame's central square (what
a center crop keeps; large objects may reach out of it). Everything else varies so that a model has to learn the
motion, not the look:

- the object: irregular polygons, slivers and needles, arrows, block letters (L, T, U, F, E, plus), glyphs in
  several fonts, irregular stars, clusters of ellipses; filled flat, with gradients, textures, stripes or checks,
  outlined only, with holes, with a contrasting rim or an off-centre dot; from tiny (about 1% of the frame) to
  large (40%+);
- the motion's amount and pace: a travel of 12%-90% of the square, a rotation of 25-450 degrees, a size ratio of
  1.2-6, at a constant or an eased pace, translations up to 8 degrees off their axis;
- the scene: plain, gradient, blotchy, checkerboard (fine to coarse), colour mosaic, stripes or noise backgrounds,
  static distractor objects, per-frame noise, blur, brightness drifts and flicker;
- the file: resolution and aspect ratio (portrait and odd sizes too), frame rate (12-60 fps), codec (h264, vp9,
  mpeg4), container (mp4, mkv, mov, webm, avi) and quality (down to heavily compressed).

A video is a pure function of ``(seed, class, index)``, so datasets are reproducible and disjoint seeds give
disjoint videos.
"""

from __future__ import annotations

import argparse
import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from handler.labels import MOTION_CLASSES

# (codec, container, pixel format, extension). yuv444p is the one that accepts odd frame sizes.
ENCODINGS = (
    ("libx264", "mp4", "yuv420p", "mp4"),
    ("libx264", "matroska", "yuv444p", "mkv"),
    ("libx264", "mov", "yuv420p", "mov"),
    ("libvpx-vp9", "webm", "yuv420p", "webm"),
    ("libvpx-vp9", "matroska", "yuv420p", "mkv"),
    ("mpeg4", "avi", "yuv420p", "avi"),
    ("mpeg4", "mp4", "yuv420p", "mp4"),
)
FRAME_RATES = (Fraction(12), Fraction(15), Fraction(20), Fraction(24), Fraction(25), Fraction(30000, 1001),
               Fraction(30), Fraction(48), Fraction(50), Fraction(60))  # fmt: skip
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16, 2.35)
SHAPES = ("polygon", "sliver", "arrow", "block", "glyph", "star", "ellipses")
FILLS = ("flat", "gradient", "texture", "stripes", "checks", "outline")
BACKGROUNDS = ("plain", "gradient", "blotches", "checkerboard", "mosaic", "stripes", "noise")
# Encoder settings that keep generation fast. "low" is what a phone upload or an old AVI looks like.
_QUALITY = {
    "libx264": {"normal": ("crf", 20, 28), "low": ("crf", 34, 44)},
    "libvpx-vp9": {"normal": ("crf", 28, 36), "low": ("crf", 48, 60)},
    "mpeg4": {"normal": ("qscale", 2, 6), "low": ("qscale", 10, 28)},
}
_SPEED = {"libx264": {"preset": "veryfast"}, "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "b": "0"}}
MIN_AREA = 0.008  # the least area of the central square an object covers (about 100 pixels of a 112 crop)
_SPRITE = 192  # the side of an object's RGBA image; its farthest point from the centre is _REACH pixels away
_REACH = 86.0
_GLYPHS = "ABCDEFGJKLMPQRTUVWYabdefghjkmnpqrty2345679?&#%@"
_FONTS = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSans.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneralBol.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
)


def encode(
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    fps: float | Fraction = 30,
    container: str = "mp4",
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> bytes:
    """Encodes ``(T, H, W, 3)`` uint8 RGB frames into a video file in memory with PyAV.

    Frame ``i`` gets pts ``i`` in the encoder's ``1 / fps`` time base (the muxer may rescale it). Odd sizes need
    a 4:4:4 or RGB ``pix_fmt``.
    """
    rate = Fraction(fps).limit_denominator(100000)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return buffer.getvalue()


@dataclass(frozen=True)
class Placed:
    """A static object: its image, centre (pixels), farthest-point radius (pixels) and angle (radians)."""

    sprite: np.ndarray  # (_SPRITE, _SPRITE, 4) uint8 RGBA, alpha 0 outside the object
    center: tuple[float, float]
    radius: float
    angle: float


@dataclass(frozen=True)
class MotionVideo:
    """Everything that defines one synthetic video (sampled by :func:`sample`).

    The object's pose at time ``t`` (seconds) follows ``p = pace(t / duration)`` in [0, 1], strictly increasing:
    centre ``center + p * displacement``, angle ``angle + p * rotation``, scale from ``scale[0]`` to ``scale[1]``
    linearly in ``p``.
    """

    motion: str
    width: int
    height: int
    fps: Fraction
    num_frames: int
    codec: str
    container: str
    pix_fmt: str
    extension: str
    quality: str  # "normal" or "low"
    options: tuple[tuple[str, str], ...]  # encoder options
    shape: str  # one of SHAPES
    fill: str  # one of FILLS
    sprite: np.ndarray  # (_SPRITE, _SPRITE, 4) uint8 RGBA, the object at scale 1, angle 0
    radius: float  # pixels from the object's centre to its farthest point, at scale 1
    center: tuple[float, float]  # start position, pixels
    displacement: tuple[float, float]  # pixels over the whole video (translations)
    angle: float  # start angle, radians
    rotation: float  # radians over the whole video, > 0 is clockwise on screen
    scale: tuple[float, float]  # start and end scale
    ease: float  # 0: constant pace; up to 0.6: slower at the start and the end (sine ease-in-out mix)
    background_kind: str  # one of BACKGROUNDS
    background: np.ndarray  # (H, W, 3) uint8, distractors included
    background_noise: float  # per-frame pixel noise added to the background, std in levels
    frame_noise: float  # per-frame noise over the whole frame, std in levels
    blur: float  # Gaussian blur radius over the whole frame, pixels (0: sharp)
    brightness: tuple[float, float]  # gain at the start and at the end
    flicker: float  # std of a per-frame gain jitter

    @property
    def velocity(self) -> tuple[float, float]:
        """Mean translation speed, pixels per second."""
        duration = max((self.num_frames - 1) / float(self.fps), 1e-6)
        return self.displacement[0] / duration, self.displacement[1] / duration

    def pace(self, progress: float) -> float:
        """Fraction of the motion done at ``progress`` (fraction of the video's duration), both in [0, 1]."""
        progress = min(max(progress, 0.0), 1.0)
        return (1 - self.ease) * progress + self.ease * 0.5 * (1 - math.cos(math.pi * progress))


def sample(motion: str, rng: np.random.Generator, encoding: int | None = None) -> MotionVideo:
    """Draws the look and the motion parameters of one video of class ``motion``.

    ``encoding`` picks an entry of :data:`ENCODINGS` instead of drawing one.
    """
    if motion not in MOTION_CLASSES:
        raise ValueError(f"unknown motion {motion!r}; classes: {', '.join(MOTION_CLASSES)}")
    drawn = int(rng.integers(len(ENCODINGS)))
    codec, container, pix_fmt, extension = ENCODINGS[drawn if encoding is None else encoding]
    quality = "low" if rng.uniform() < 0.3 else "normal"
    name, low, high = _QUALITY[codec][quality]
    options = {**_SPEED.get(codec, {}), name: str(int(rng.integers(low, high + 1)))}
    short = int(rng.integers(96, 221))
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    short = min(short, round(400 / max(aspect, 1 / aspect)))  # the long side at most 400 pixels
    width, height = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    if pix_fmt != "yuv444p":  # 4:2:0 needs even sizes
        width, height = width - width % 2, height - height % 2
    fps = FRAME_RATES[rng.integers(len(FRAME_RATES))]
    duration = rng.uniform(3.0, 4.0)
    square = min(width, height)
    left, top = (width - square) / 2, (height - square) / 2

    shape = SHAPES[rng.integers(len(SHAPES))]
    fill = FILLS[rng.integers(len(FILLS))]
    background_kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    background = _background(rng, background_kind, width, height)
    color = _contrasting_color(rng, background)
    sprite = _sprite(rng, shape, fill, color)
    # The smallest the object gets still covers MIN_AREA of the square: a thin sliver is drawn longer than a blob.
    coverage = float(sprite[..., 3].mean()) / 255 * (_SPRITE / _REACH) ** 2  # area / radius^2
    smallest = math.sqrt(MIN_AREA / coverage) * square  # radius in pixels
    radius = min(max(_log_uniform(rng, 0.06, 0.5) * square, smallest), 0.5 * square)
    scale = (1.0, 1.0)
    if motion in ("growing", "shrinking"):
        # The larger size is drawn, then a size ratio from barely (1.2) to strongly (6) changing.
        radius = max(_log_uniform(rng, 0.14, 0.5) * square, 1.2 * smallest)
        scale = (max(1 / _log_uniform(rng, 1.2, 6.0), smallest / radius), 1.0)
        if motion == "shrinking":
            scale = scale[::-1]
    # Large objects may reach out of the central square by up to a third of their radius.
    margin = radius * max(scale) * (0.7 if radius > 0.3 * square else 1.05)
    margin = min(margin, 0.45 * square)
    span = square - 2 * margin
    center = (left + margin + span * rng.uniform(), top + margin + span * rng.uniform())
    displacement = (0.0, 0.0)
    if motion.startswith("moving"):
        axis = 0 if motion in ("moving left", "moving right") else 1
        sign = -1.0 if motion in ("moving left", "moving up") else 1.0
        travel = max(span * rng.uniform(0.3, 1.0), 0.12 * square)
        drift = math.tan(math.radians(rng.uniform(-8, 8))) * travel
        lows = (left + margin, top + margin)
        if travel <= span:
            along = lows[axis] + (span - travel) * rng.uniform() + (travel if sign < 0 else 0.0)
        else:  # a large object: centred on its path, leaving the square a little at both ends
            along = (left, top)[axis] + (square - sign * travel) / 2
        room = span - abs(drift)
        across = lows[1 - axis] + max(-drift, 0.0) + room * rng.uniform() if room > 0 else lows[1 - axis] + span / 2
        center = (along, across) if axis == 0 else (across, along)
        displacement = (sign * travel, drift) if axis == 0 else (drift, sign * travel)
    rotation = 0.0
    if motion.startswith("rotating"):
        rotation = math.radians(_log_uniform(rng, 25, 450)) * (1 if motion == "rotating clockwise" else -1)

    base = Image.fromarray(background)
    for _ in range(int(rng.choice([0, 0, 1, 2, 3]))):
        other = SHAPES[rng.integers(len(SHAPES))]
        static = Placed(
            _sprite(rng, other, FILLS[rng.integers(len(FILLS))], tuple(int(c) for c in rng.integers(0, 256, 3))),
            (rng.uniform(0, width), rng.uniform(0, height)),
            _log_uniform(rng, 0.04, 0.15) * square,
            rng.uniform(0, 2 * math.pi),
        )
        base = _composite(base, static.sprite, static.center, static.radius, static.angle)
    effects = rng.uniform(size=3)
    return MotionVideo(
        motion=motion,
        width=width,
        height=height,
        fps=fps,
        num_frames=max(int(duration * fps), 1),
        codec=codec,
        container=container,
        pix_fmt=pix_fmt,
        extension=extension,
        quality=quality,
        options=tuple(sorted(options.items())),
        shape=shape,
        fill=fill,
        sprite=sprite,
        radius=radius,
        center=center,
        displacement=displacement,
        angle=rng.uniform(0, 2 * math.pi),
        rotation=rotation,
        scale=scale,
        ease=float(rng.choice([0.0, rng.uniform(0, 0.6)])),
        background_kind=background_kind,
        background=np.asarray(base),
        background_noise=float(rng.choice([0.0, 0.0, rng.uniform(4, 14)])),
        frame_noise=float(rng.uniform(0, 8)),
        blur=float(rng.uniform(0.4, 1.6)) if effects[0] < 0.3 else 0.0,
        brightness=(rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)) if effects[1] < 0.3 else (1.0, 1.0),
        flicker=float(rng.uniform(0.01, 0.04)) if effects[2] < 0.2 else 0.0,
    )


def render(video: MotionVideo, rng: np.random.Generator) -> np.ndarray:
    """The video's frames, ``(T, H, W, 3)`` uint8 RGB."""
    frames = np.empty((video.num_frames, video.height, video.width, 3), dtype=np.uint8)
    static = video.background.astype(np.float32)
    last = max(video.num_frames - 1, 1)
    for i in range(video.num_frames):
        p = video.pace(i / last)
        layer = static
        if video.background_noise:
            layer = static + video.background_noise * rng.standard_normal(static.shape, dtype=np.float32)
        image = Image.fromarray(np.clip(layer, 0, 255).astype(np.uint8))
        scale = video.scale[0] + (video.scale[1] - video.scale[0]) * p
        center = (video.center[0] + p * video.displacement[0], video.center[1] + p * video.displacement[1])
        image = _composite(image, video.sprite, center, video.radius * scale, video.angle + p * video.rotation)
        if video.blur:
            image = image.filter(ImageFilter.GaussianBlur(video.blur))
        gain = video.brightness[0] + (video.brightness[1] - video.brightness[0]) * i / last
        if video.flicker:
            gain *= 1 + rng.normal(0, video.flicker)
        frame = np.asarray(image, dtype=np.float32) * np.float32(gain)
        if video.frame_noise:
            frame += video.frame_noise * rng.standard_normal(frame.shape, dtype=np.float32)
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def make_video(
    motion: str, seed: int, index: int, *, encoding: int | None = None, reverse: bool = False
) -> tuple[bytes, MotionVideo]:
    """One encoded video of class ``motion``: a pure function of ``(seed, class, index)``.

    Args:
        encoding: force this entry of :data:`ENCODINGS`.
        reverse: play the frames backwards (a ``moving left`` video then moves right).
    """
    rng = np.random.default_rng([seed, MOTION_CLASSES.index(motion), index])
    video = sample(motion, rng, encoding)
    frames = render(video, rng)
    data = encode(
        frames[::-1] if reverse else frames,
        fps=video.fps,
        container=video.container,
        codec=video.codec,
        pix_fmt=video.pix_fmt,
        options=dict(video.options),
    )
    return data, video


def _write_one(job: tuple[Path, str, int, int]) -> Path:
    root, motion, seed, index = job
    data, video = make_video(motion, seed, index)
    path = root / motion / f"{seed}-{index:04d}.{video.extension}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_dataset(
    root: Path, per_class: int, seed: int, classes: Sequence[str] = MOTION_CLASSES, jobs: int = 1
) -> list[Path]:
    """Writes ``per_class`` videos of each class under ``root/<class>/`` with ``jobs`` processes; returns their
    paths (the same files whatever ``jobs`` is)."""
    from tqdm import tqdm

    work = [(root, motion, seed, i) for motion in classes for i in range(per_class)]
    progress = {"desc": f"videos -> {root}", "unit": "video", "total": len(work)}
    if jobs <= 1:
        return [_write_one(job) for job in tqdm(work, **progress)]
    with ProcessPoolExecutor(jobs) as pool:
        return list(tqdm(pool.map(_write_one, work, chunksize=4), **progress))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _composite(
    image: Image.Image, sprite: np.ndarray, center: tuple[float, float], radius: float, angle: float
) -> Image.Image:
    """``image`` (RGB) with ``sprite`` drawn over it: centred at ``center``, its farthest point ``radius`` pixels
    away, turned by ``angle`` radians (clockwise on screen, y pointing down)."""
    picture = Image.fromarray(sprite, "RGBA")
    middle, reach = _SPRITE / 2, _REACH
    shrink = int(_REACH / max(radius, 0.5))
    if shrink >= 2:  # averaged down first: a bilinear lookup alone would skip detail and flicker when small
        picture = picture.reduce(shrink)
        middle, reach = picture.width / 2, _REACH * picture.width / _SPRITE
    zoom = max(radius, 0.5) / reach  # output pixels per sprite pixel
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # PIL's affine transform maps each output pixel back into the sprite: the inverse rotation and zoom.
    inverse = (
        cos,
        sin,
        middle - cos * center[0] - sin * center[1],
        -sin,
        cos,
        middle + sin * center[0] - cos * center[1],
    )
    layer = picture.transform(image.size, Image.AFFINE, inverse, resample=Image.BILINEAR)
    out = image.convert("RGBA")
    out.alpha_composite(layer)
    return out.convert("RGB")


def _contrasting_color(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour that stands out from most of ``background`` (``(H, W, 3)`` uint8): the best of 12 random
    candidates by the 20th percentile of its distance to the background's pixels."""
    pixels = background.reshape(-1, 3)[:: max(background.shape[0] * background.shape[1] // 400, 1)]
    candidates = rng.integers(0, 256, (12, 3))
    distance = np.abs(candidates[:, None, :] - pixels[None, :, :].astype(np.int64)).sum(axis=2)
    best = candidates[int(np.argmax(np.percentile(distance, 20, axis=1)))]
    return tuple(int(c) for c in best)


def _shade(rng: np.random.Generator, color: tuple[int, int, int], amount: float = 110) -> tuple[int, int, int]:
    """A colour clearly different from ``color`` (lighter where it is dark, darker where it is light)."""
    base = np.array(color, dtype=np.float32)
    other = np.where(base > 127, base - amount, base + amount) + rng.uniform(-25, 25, 3)
    return tuple(int(c) for c in np.clip(other, 0, 255))


def _sprite(rng: np.random.Generator, shape: str, fill: str, color: tuple[int, int, int]) -> np.ndarray:
    """An object as a ``(_SPRITE, _SPRITE, 4)`` uint8 RGBA image: centred on its centroid, farthest point
    ``_REACH`` pixels from the centre, alpha 0 outside it."""
    big = 2 * _SPRITE  # drawn at twice the size, then reduced: smooth edges
    mask = Image.new("L", (big, big), 0)
    _draw_shape(rng, ImageDraw.Draw(mask), shape, big)
    if fill != "outline" and rng.uniform() < 0.25:
        _punch_holes(rng, mask)
    if fill == "outline":
        mask = Image.fromarray(np.minimum(np.asarray(mask), 255 - _erode(mask, big * rng.uniform(0.025, 0.07))))
    texture = _texture(rng, fill, color, big)
    if fill != "outline" and rng.uniform() < 0.25:  # a contrasting rim
        inner = _erode(mask, big * rng.uniform(0.015, 0.04))[..., None] > 127
        texture = np.where(inner, texture, np.array(_shade(rng, color, 150), dtype=np.uint8))
    rgba = np.dstack([texture, np.asarray(mask)])
    if rng.uniform() < 0.35:  # an off-centre dot
        alpha = np.asarray(mask) > 127
        ys, xs = np.nonzero(alpha)
        if len(xs):
            pick = int(rng.integers(len(xs)))
            dot = Image.fromarray(rgba, "RGBA")
            r = big * rng.uniform(0.04, 0.08)
            ImageDraw.Draw(dot).ellipse(
                [xs[pick] - r, ys[pick] - r, xs[pick] + r, ys[pick] + r], fill=(*_shade(rng, color, 160), 255)
            )
            rgba = np.asarray(dot)
    return _normalise(rgba)


def _normalise(rgba: np.ndarray) -> np.ndarray:
    """Moves the object's centroid to the centre and scales its farthest point to ``_REACH``, at ``_SPRITE``."""
    alpha = rgba[..., 3].astype(np.float64)
    ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]]
    total = max(alpha.sum(), 1.0)
    cy, cx = (alpha * ys).sum() / total, (alpha * xs).sum() / total
    inside = alpha > 64
    reach = math.sqrt(((ys[inside] - cy) ** 2 + (xs[inside] - cx) ** 2).max()) if inside.any() else 1.0
    zoom = reach / _REACH  # source pixels per sprite pixel
    middle = _SPRITE / 2
    data = (zoom, 0, cx - zoom * middle, 0, zoom, cy - zoom * middle)
    image = Image.fromarray(rgba, "RGBA").transform((_SPRITE, _SPRITE), Image.AFFINE, data, Image.BILINEAR)
    return np.asarray(image)


def _draw_shape(rng: np.random.Generator, draw: ImageDraw.ImageDraw, shape: str, size: int) -> None:
    """Draws one object of family ``shape`` in white on a black ``size`` x ``size`` mask."""
    c, r = size / 2, size * 0.42

    def place(points: np.ndarray) -> list[tuple[float, float]]:
        return [(c + x * r, c + y * r) for x, y in points]

    if shape == "polygon":
        count = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, count))
        radii = rng.uniform(0.45, 1.0, count)
        radii[rng.integers(count)] = 1.0
        draw.polygon(place(np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)), fill=255)
    elif shape == "sliver":
        width = rng.uniform(0.05, 0.2)
        bend = rng.uniform(-0.3, 0.3)
        spine = np.array([[-1.0, 0.0], [0.0, bend], [1.0, 0.0]])
        tip = rng.uniform(0.0, 1.0)  # 0: a needle's point at one end, 1: a flat bar
        outline = [(-1, -width * tip), (0, bend - width), (1, -width), (1, width), (0, bend + width), (-1, width * tip)]
        draw.polygon(place(np.array(outline, dtype=float)), fill=255)
        if rng.uniform() < 0.5:  # a knob at one end
            k = width * rng.uniform(1.2, 2.2)
            x, y = place(spine[-1:])[0]
            draw.ellipse([x - k * r, y - k * r, x + k * r, y + k * r], fill=255)
    elif shape == "arrow":
        shaft, head, length = rng.uniform(0.12, 0.3), rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.7)
        points = [(-1, -shaft), (1 - length, -shaft), (1 - length, -head), (1, 0), (1 - length, head),
                  (1 - length, shaft), (-1, shaft)]  # fmt: skip
        draw.polygon(place(np.array(points, dtype=float)), fill=255)
    elif shape == "block":
        t = rng.uniform(0.25, 0.5)
        bars = {
            "L": [(-1, -1, -1 + t, 1), (-1, 1 - t, 0.6, 1)],
            "T": [(-1, -1, 1, -1 + t), (-t / 2, -1, t / 2, 1)],
            "U": [(-1, -1, -1 + t, 1), (0.7 - t, -1, 0.7, 1), (-1, 1 - t, 0.7, 1)],
            "F": [(-0.8, -1, -0.8 + t, 1), (-0.8, -1, 0.8, -1 + t), (-0.8, -t / 2, 0.4, t / 2)],
            "E": [(-0.8, -1, -0.8 + t, 1), (-0.8, -1, 0.8, -1 + t), (-0.8, -t / 2, 0.4, t / 2), (-0.8, 1 - t, 0.6, 1)],
            "plus": [(-1, -t / 2, 1, t / 2), (-t / 2, -0.6, t / 2, 1)],
        }
        for x0, y0, x1, y1 in bars[list(bars)[rng.integers(len(bars))]]:
            (a, b), (d, e) = place(np.array([[x0, y0], [x1, y1]]))
            draw.rectangle([a, b, d, e], fill=255)
    elif shape == "glyph":
        text = _GLYPHS[rng.integers(len(_GLYPHS))]
        draw.text((c, c), text, fill=255, font=_font(_FONTS[rng.integers(len(_FONTS))], int(size * 0.8)), anchor="mm")
    elif shape == "star":
        tips = int(rng.integers(3, 9))
        angles = np.linspace(0, 2 * math.pi, 2 * tips, endpoint=False) + rng.uniform(0, math.pi)
        radii = np.where(np.arange(2 * tips) % 2 == 0, rng.uniform(0.55, 1.0, 2 * tips), rng.uniform(0.2, 0.5))
        radii[0] = 1.0  # one tip longer than the others: no rotational symmetry
        draw.polygon(place(np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)), fill=255)
    elif shape == "ellipses":
        for _ in range(int(rng.integers(2, 5))):
            (x, y), a, b = rng.uniform(-0.5, 0.5, 2), rng.uniform(0.2, 0.55), rng.uniform(0.1, 0.35)
            (x0, y0), (x1, y1) = place(np.array([[x - a, y - b], [x + a, y + b]]))
            draw.ellipse([x0, y0, x1, y1], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib  # its bundled TrueType fonts: the same everywhere the requirements are installed

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def _erode(mask: Image.Image, width: float) -> np.ndarray:
    """The mask shrunk by about ``width`` pixels, ``(H, W)`` uint8."""
    import cv2

    side = max(int(width) | 1, 3)
    return cv2.erode(np.asarray(mask), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))


def _punch_holes(rng: np.random.Generator, mask: Image.Image) -> None:
    """Cuts one to three holes inside the shape (where the shape is, so the outline stays)."""
    inside = np.argwhere(np.asarray(mask) > 127)  # a hole near the edge is a notch: as good
    if not len(inside):
        return
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        y, x = inside[rng.integers(len(inside))]
        a, b = rng.uniform(6, 20, 2)
        draw.ellipse([x - a, y - b, x + a, y + b], fill=0)


def _texture(rng: np.random.Generator, fill: str, color: tuple[int, int, int], size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 RGB paint for an object's pixels."""
    base = np.array(color, dtype=np.float32)
    other = np.array(_shade(rng, color, rng.uniform(50, 120)), dtype=np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    direction = rng.uniform(0, 2 * math.pi)
    along = xs * math.cos(direction) + ys * math.sin(direction)
    if fill == "gradient":
        weight = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif fill == "texture":
        coarse = rng.uniform(0, 1, (int(rng.integers(4, 16)),) * 2).astype(np.float32)
        weight = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.BICUBIC)).clip(0, 1)
    elif fill == "stripes":
        weight = (np.sin(along * 2 * math.pi * rng.uniform(3, 10)) > 0).astype(np.float32)
    elif fill == "checks":
        cells = rng.uniform(3, 9)
        weight = ((np.floor(xs * cells) + np.floor(ys * cells)) % 2).astype(np.float32)
    else:  # flat, outline
        weight = np.zeros((size, size), np.float32)
    return (base + (other - base) * weight[..., None]).clip(0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, kind: str, width: int, height: int) -> np.ndarray:
    """A still background of ``kind`` (one of :data:`BACKGROUNDS`), ``(H, W, 3)`` uint8 RGB."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    other = np.clip(base + rng.uniform(-140, 140, 3), 0, 255)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    along = xs * math.cos(direction) + ys * math.sin(direction)
    across = -xs * math.sin(direction) + ys * math.cos(direction)
    if kind == "plain":
        weight = np.zeros((height, width), np.float32)
    elif kind == "gradient":
        weight = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif kind == "blotches":
        coarse = rng.normal(0, 35, (max(height // 12, 2), max(width // 12, 2), 3)).astype(np.float32)
        texture = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
            (width, height), Image.BILINEAR
        )
        return np.clip(base + (np.asarray(texture, dtype=np.float32) - 128), 0, 255).astype(np.uint8)
    elif kind == "checkerboard":
        cell = _log_uniform(rng, 2, 28)
        tilted = rng.uniform() < 0.3
        u, v = (along, across) if tilted else (xs, ys)
        weight = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    elif kind == "mosaic":
        cell = _log_uniform(rng, 3, 40)
        cells = rng.integers(0, 256, (math.ceil(height / cell) + 1, math.ceil(width / cell) + 1, 3)).astype(np.uint8)
        image = Image.fromarray(cells).resize(
            (round(cells.shape[1] * cell), round(cells.shape[0] * cell)), Image.NEAREST
        )
        strength = rng.uniform(0.3, 0.8)
        mixed = np.asarray(image, dtype=np.float32)[:height, :width] * strength + base * (1 - strength)
        return np.clip(mixed, 0, 255).astype(np.uint8)
    elif kind == "stripes":
        period = _log_uniform(rng, 3, 40)
        weight = (np.sin(along * 2 * math.pi / period) > 0).astype(np.float32)
    elif kind == "noise":
        noise = rng.uniform(0, 1, (height, width, 1 if rng.uniform() < 0.5 else 3)).astype(np.float32)
        return np.clip(base + (other - base) * noise * rng.uniform(0.3, 0.8), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown background {kind!r}; backgrounds: {', '.join(BACKGROUNDS)}")
    return np.clip(base + (other - base) * weight[..., None], 0, 255).astype(np.uint8)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="output folder (one sub-folder per class)")
    parser.add_argument("--per-class", type=int, default=60, help="videos per class (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; disjoint seeds give disjoint videos")
    parser.add_argument(
        "--classes", nargs="+", choices=MOTION_CLASSES, default=MOTION_CLASSES, metavar="CLASS", help="a subset"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: the CPU count, %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    paths = write_dataset(args.root, args.per_class, args.seed, args.classes, jobs=args.jobs)
    print(f"{len(paths)} videos in {args.root}")
    return 0
