"""Synthetic motion videos in 8 classes, as a folder-of-folders dataset (``root/<class>/<id>.<ext>``).

Every video shows one irregular polygon (never rotation-symmetric, with an off-centre marker) that moves left,
right, up or down, rotates clockwise or counterclockwise, grows or shrinks for the whole video (3-4 s), so any
clip window shows the motion, inside the frame's central square (what a center crop keeps). Everything else
varies so that a model has to learn the motion, not the look: shape, colours, size, speed, start position,
background (plain, gradient, texture, per-frame noise), static distractor shapes, frame noise, resolution and
aspect ratio (portrait and odd sizes too), frame rate (15-60 fps), codec (h264, vp9, mpeg4) and container (mp4,
mkv, mov, webm, avi).

A video is a pure function of ``(seed, class, index)``, so datasets are reproducible and disjoint seeds give
disjoint videos.
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

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
FRAME_RATES = (Fraction(15), Fraction(20), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
               Fraction(48), Fraction(50), Fraction(60))  # fmt: skip
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16)
# Encoder settings that keep generation fast; quality stays well above what the motion needs.
_CODEC_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "23"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"},
    "mpeg4": {"qscale": "4"},
}


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
class MotionVideo:
    """Everything that defines one synthetic video (sampled by :func:`sample`)."""

    motion: str
    width: int
    height: int
    fps: Fraction
    num_frames: int
    codec: str
    container: str
    pix_fmt: str
    extension: str
    shape: np.ndarray  # (V, 2) polygon vertices around (0, 0), radius <= 1
    marker: tuple[float, float]  # a dot in shape coordinates that shows orientation
    color: tuple[int, int, int]
    marker_color: tuple[int, int, int]
    radius: float  # pixels, at scale 1
    center: tuple[float, float]  # start position, pixels
    velocity: tuple[float, float]  # pixels per second (translation)
    angle: float  # start angle, radians
    spin: float  # radians per second, > 0 is clockwise on screen
    scale: tuple[float, float]  # start and end scale
    background: np.ndarray  # (H, W, 3) uint8
    background_noise: float  # per-frame pixel noise added to the background, std in levels
    frame_noise: float  # per-frame noise over the whole frame, std in levels
    distractors: tuple[tuple[np.ndarray, tuple[int, int, int]], ...]  # static polygons, pixel coordinates


def sample(motion: str, rng: np.random.Generator, encoding: int | None = None) -> MotionVideo:
    """Draws the look and the motion parameters of one video of class ``motion``.

    ``encoding`` picks an entry of :data:`ENCODINGS` instead of drawing one.
    """
    if motion not in MOTION_CLASSES:
        raise ValueError(f"unknown motion {motion!r}; classes: {', '.join(MOTION_CLASSES)}")
    drawn = int(rng.integers(len(ENCODINGS)))
    codec, container, pix_fmt, extension = ENCODINGS[drawn if encoding is None else encoding]
    short = int(rng.integers(96, 201))
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    width, height = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    if pix_fmt != "yuv444p":  # 4:2:0 needs even sizes
        width, height = width - width % 2, height - height % 2
    fps = FRAME_RATES[rng.integers(len(FRAME_RATES))]
    duration = rng.uniform(3.0, 4.0)
    # The object and its whole path stay inside the central square: the part a center crop keeps.
    square = min(width, height)
    left, top = (width - square) / 2, (height - square) / 2
    radius = rng.uniform(0.14, 0.22) * square
    scale = (1.0, 1.0)
    if motion in ("growing", "shrinking"):
        # From a small object to one that nearly fills the square: its edges move about as fast as a translation.
        radius = rng.uniform(0.40, 0.45) * square
        scale = (rng.uniform(0.15, 0.22), 1.0)
        if motion == "shrinking":
            scale = scale[::-1]
    reach = radius * max(scale) * 1.05  # distance from the object's center to its farthest point
    velocity = (0.0, 0.0)
    center = (left + rng.uniform(reach, square - reach), top + rng.uniform(reach, square - reach))
    if motion.startswith("moving"):
        axis = 0 if motion in ("moving left", "moving right") else 1
        span = square - 2 * reach
        travel = span * rng.uniform(0.6, 0.95)
        sign = -1.0 if motion in ("moving left", "moving up") else 1.0
        start_along = (left, top)[axis] + reach + (span - travel) * rng.uniform() + (travel if sign < 0 else 0.0)
        center = (start_along, center[1]) if axis == 0 else (center[0], start_along)
        speed = sign * travel / duration
        velocity = (speed, 0.0) if axis == 0 else (0.0, speed)
    spin = 0.0
    if motion.startswith("rotating"):
        spin = math.radians(rng.uniform(70, 220)) * (1 if motion == "rotating clockwise" else -1)
    color, marker_color = _contrasting_colors(rng)
    background = _background(rng, width, height, avoid=color)
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
        shape=_irregular_polygon(rng),
        marker=(rng.uniform(0.35, 0.6), rng.uniform(-0.15, 0.15)),
        color=color,
        marker_color=marker_color,
        radius=radius,
        center=center,
        velocity=velocity,
        angle=rng.uniform(0, 2 * math.pi),
        spin=spin,
        scale=scale,
        background=background,
        background_noise=float(rng.choice([0.0, 0.0, rng.uniform(4, 14)])),
        frame_noise=float(rng.uniform(0, 8)),
        distractors=tuple(_distractor(rng, width, height) for _ in range(rng.integers(0, 4))),
    )


def render(video: MotionVideo, rng: np.random.Generator) -> np.ndarray:
    """The video's frames, ``(T, H, W, 3)`` uint8 RGB."""
    frames = np.empty((video.num_frames, video.height, video.width, 3), dtype=np.uint8)
    base = Image.fromarray(video.background)
    draw = ImageDraw.Draw(base)
    for polygon, color in video.distractors:
        draw.polygon([tuple(p) for p in polygon], fill=color)
    static = np.asarray(base, dtype=np.float32)
    for i in range(video.num_frames):
        t = i / float(video.fps)
        layer = static
        if video.background_noise:
            layer = static + rng.normal(0, video.background_noise, static.shape).astype(np.float32)
        image = Image.fromarray(np.clip(layer, 0, 255).astype(np.uint8))
        _draw_object(ImageDraw.Draw(image), video, t)
        frame = np.asarray(image, dtype=np.float32)
        if video.frame_noise:
            frame = frame + rng.normal(0, video.frame_noise, frame.shape).astype(np.float32)
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
        options=_CODEC_OPTIONS[video.codec],
    )
    return data, video


def write_dataset(root: Path, per_class: int, seed: int, classes: Sequence[str] = MOTION_CLASSES) -> list[Path]:
    """Writes ``per_class`` videos of each class under ``root/<class>/``; returns their paths."""
    from tqdm import tqdm

    paths = []
    jobs = [(motion, i) for motion in classes for i in range(per_class)]
    for motion, index in tqdm(jobs, desc=f"videos -> {root}", unit="video"):
        data, video = make_video(motion, seed, index)
        path = root / motion / f"{seed}-{index:04d}.{video.extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def _draw_object(draw: ImageDraw.ImageDraw, video: MotionVideo, t: float) -> None:
    progress = t / max((video.num_frames - 1) / float(video.fps), 1e-6)
    # Linear in size, so edges move at one speed throughout and shrinking is growing played backwards.
    scale = video.scale[0] + (video.scale[1] - video.scale[0]) * min(progress, 1.0)
    angle = video.angle + video.spin * t
    cx, cy = video.center[0] + video.velocity[0] * t, video.center[1] + video.velocity[1] * t
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def to_pixels(points: np.ndarray) -> list[tuple[float, float]]:
        # y points down on screen, so a positive angle turns the shape clockwise as seen.
        placed = points @ rotation.T * (video.radius * scale) + (cx, cy)
        return [tuple(p) for p in placed]

    draw.polygon(to_pixels(video.shape), fill=video.color)
    (mx, my), dot = to_pixels(np.array([video.marker]))[0], max(video.radius * scale * 0.12, 1.5)
    draw.ellipse([mx - dot, my - dot, mx + dot, my + dot], fill=video.marker_color)


def _irregular_polygon(rng: np.random.Generator) -> np.ndarray:
    """A star-shaped polygon with random vertex angles and radii: no rotational symmetry."""
    count = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * math.pi, count))
    radii = rng.uniform(0.45, 1.0, count)
    radii[rng.integers(count)] = 1.0  # one clear tip
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _contrasting_colors(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    color = rng.integers(0, 256, 3)
    marker = np.where(color > 127, color - 110, color + 110)
    return tuple(int(c) for c in color), tuple(int(c) for c in marker)


def _background(rng: np.random.Generator, width: int, height: int, avoid: tuple[int, int, int]) -> np.ndarray:
    """Plain, gradient or textured background whose mean colour keeps away from the object's colour."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    while np.abs(base - np.array(avoid)).sum() < 150:
        base = rng.integers(0, 256, 3).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        image = np.broadcast_to(base, (height, width, 3)).copy()
    elif kind == 1:
        other = np.clip(base + rng.uniform(-90, 90, 3), 0, 255)
        direction = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = xs / width * math.cos(direction) + ys / height * math.sin(direction)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        image = base + (other - base) * ramp[..., None]
    else:
        coarse = rng.normal(0, 35, (max(height // 12, 2), max(width // 12, 2), 3)).astype(np.float32)
        texture = np.asarray(
            Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR),
            dtype=np.float32,
        )
        image = base + (texture - 128)
    return np.clip(image, 0, 255).astype(np.uint8)


def _distractor(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    radius = rng.uniform(0.05, 0.15) * min(width, height)
    center = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    polygon = _irregular_polygon(rng) * radius + center
    return polygon, tuple(int(c) for c in rng.integers(0, 256, 3))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="output folder (one sub-folder per class)")
    parser.add_argument("--per-class", type=int, default=60, help="videos per class (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; disjoint seeds give disjoint videos")
    parser.add_argument(
        "--classes", nargs="+", choices=MOTION_CLASSES, default=MOTION_CLASSES, metavar="CLASS", help="a subset"
    )


def run(args: argparse.Namespace) -> int:
    paths = write_dataset(args.root, args.per_class, args.seed, args.classes)
    print(f"{len(paths)} videos in {args.root}")
    return 0
