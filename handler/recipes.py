"""Preprocessing recipes: how each toolbox turns a video into model inputs at test time.

A checkpoint is only as accurate as the preprocessing it is evaluated with, and the four toolboxes whose
SlowFast checkpoints this project serves each do it their own way. A :class:`Recipe` names every choice
that changes the model's input: which frames are picked (by time or by decoded-frame index), how frames are
resized (library and rounding), where crops sit, the value range and normalisation, how the slow pathway
is taken from the fast one, and how several views are fused. The PyTorchVideo hub tutorial is one recipe
(:data:`PYTORCHVIDEO`); every registry entry names its recipe (``ClipSpec.recipe``).

Each recipe here was read from its toolbox's own source and is checked against that toolbox's own code by
the parity tests (``tests/test_toolbox_parity.py``; the tutorial: ``tests/test_parity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Toolbox(StrEnum):
    """A toolbox whose Kinetics checkpoints this project serves, with that toolbox's own test-time preprocessing;
    also whose key names and tensor layout a checkpoint file has (``ModelSpec.checkpoint_layout``)."""

    PYTORCHVIDEO = "pytorchvideo"
    MMACTION2 = "mmaction2"
    PADDLEVIDEO = "paddlevideo"
    PYSLOWFAST = "pyslowfast"

    @property
    def title(self) -> str:
        """The toolbox's name as people write it (``MMAction2``)."""
        return _TITLES[self]


_TITLES = {
    Toolbox.PYTORCHVIDEO: "PyTorchVideo",
    Toolbox.MMACTION2: "MMAction2",
    Toolbox.PADDLEVIDEO: "PaddleVideo",
    Toolbox.PYSLOWFAST: "PySlowFast",
}

# How the frames of one clip are chosen (see handler.sampling):
#   time_window     frames whose timestamps fall in [start, start + clip) (PyTorchVideo's get_clip), sorted by
#                   timestamp, then linspace-subsampled to num_frames;
#   frame_interval  every sampling_rate-th decoded frame from a start index, counted in decoder output order,
#                   wrapping past the container's frame count (MMAction2's SampleFrames);
#   index_linspace  num_frames indices spread over num_frames * sampling_rate * fps / 30 decoded frames, counted
#                   in decoder output order (PaddleVideo's DecodeSampler);
#   pts_linspace    the first frame at or after the clip's start timestamp, then frames spread over
#                   num_frames * sampling_rate * fps / 30 timestamp-sorted frames (PySlowFast's PyAV decoder).
Sampler = Literal["time_window", "frame_interval", "index_linspace", "pts_linspace"]
# The resize of the short side: torch's bilinear on floats (align_corners=False, no antialias; the long side
# floored), OpenCV's INTER_LINEAR on uint8 (the long side rounded half up, mmcv.rescale_size), or Pillow's
# BILINEAR on uint8 (a triangle filter that widens when shrinking; the long side floored).
Resize = Literal["torch_bilinear", "cv2_bilinear", "pil_bilinear"]
# The single view's square crop offset along each axis: round((L - S) / 2) half to even (torchvision's
# CenterCropVideo), floor (MMAction2's CenterCrop), ceil (PySlowFast's / PaddleVideo's middle crop).
CenterCrop = Literal["round", "floor", "ceil"]
# The three crops of the multi-view protocol along the long side: uniform_crop = start, ceil middle, end
# (PyTorchVideo, PySlowFast, PaddleVideo's MultiCrop); mmaction2 = 0, floor((L - S) / 2) and twice that
# (MMAction2's ThreeCrop, whose last crop stops one pixel short of the end when L - S is odd).
ThreeCrop = Literal["uniform_crop", "mmaction2"]
# The slow pathway's frames from the fast clip of T frames: linspace(0, T - 1, T // alpha) truncated, or every
# alpha-th frame (MMAction2's backbone subsamples with nearest interpolation: x[:, :, ::alpha]).
SlowFrames = Literal["linspace", "stride"]
# How a toolbox fuses view probabilities: their mean, or their sum (served as the mean: same ranking, scores in
# [0, 1]).
Fusion = Literal["mean", "sum"]


@dataclass(frozen=True)
class Recipe:
    """One toolbox's test-time preprocessing (the clip's sizes and mean/std live in ``ClipSpec``).

    Attributes:
        name: the toolbox whose pipeline this is.
        toolbox: the code this recipe reproduces, with its version.
        sampler: how a clip's frames are chosen (see :data:`Sampler`).
        resize: the short-side resize (see :data:`Resize`).
        center_crop: the single view's crop rounding (see :data:`CenterCrop`).
        three_crop: the three-crop placement of the multi-view protocol (see :data:`ThreeCrop`).
        pixel_scale: uint8 values are divided by this before ``(x - mean) / std``: 255 for mean/std given on
            [0, 1], 1 for mean/std given on [0, 255].
        slow_frames: how the slow pathway is taken from the fast clip (see :data:`SlowFrames`).
        view_fusion: how the toolbox fuses its views' probabilities (the service always returns the mean).
        single_view: what one view (``views=1x1``) is, for the docs.
        multi_view: which protocol ``views=CxK`` reproduces, for the docs.
    """

    name: Toolbox
    toolbox: str
    sampler: Sampler
    resize: Resize
    center_crop: CenterCrop
    three_crop: ThreeCrop
    pixel_scale: float
    slow_frames: SlowFrames
    view_fusion: Fusion
    single_view: str
    multi_view: str

    @property
    def title(self) -> str:
        """The toolbox's name as people write it (``MMAction2``)."""
        return self.name.title

    @property
    def by_index(self) -> bool:
        """Whether clips are placed by decoded-frame index (in decoder output order) rather than by time."""
        return self.sampler in ("frame_interval", "index_linspace")


PYTORCHVIDEO = Recipe(
    name=Toolbox.PYTORCHVIDEO,
    toolbox="PyTorchVideo 0.1.5 hub tutorial (EncodedVideo.get_clip + its Kinetics transform)",
    sampler="time_window",
    resize="torch_bilinear",
    center_crop="round",
    three_crop="uniform_crop",
    pixel_scale=255.0,
    slow_frames="linspace",
    view_fusion="mean",
    single_view="the frames of [start_sec, start_sec + clip) by timestamp, uniformly subsampled, center crop",
    multi_view="PyTorchVideo's test protocol: clip k starts at start_sec + k * (duration - start_sec - clip) / "
    "clips; uniform_crop's 3 crops; mean of the views' probabilities",
)

MMACTION2 = Recipe(
    name=Toolbox.MMACTION2,
    toolbox="MMAction2 1.2.0 test pipeline (SampleFrames, DecordDecode, Resize, ThreeCrop, ActionDataPreprocessor)",
    sampler="frame_interval",
    resize="cv2_bilinear",
    center_crop="floor",
    three_crop="mmaction2",
    pixel_scale=1.0,
    slow_frames="stride",
    view_fusion="mean",
    single_view="every frame_interval-th decoded frame from the first frame at or after start_sec (decoder output "
    "order; past the container's frame count the indices wrap to the start, as SampleFrames' 'loop'), OpenCV "
    "resize, CenterCrop",
    multi_view="SampleFrames(num_clips=C, test_mode=True): offsets round(k * (N - span) / (C - 1)) over the "
    "container's frame count N; ThreeCrop; softmax per view, then the mean (average_clips='prob')",
)

PADDLEVIDEO = Recipe(
    name=Toolbox.PADDLEVIDEO,
    toolbox="PaddleVideo (ppvideo 2.3.1) SlowFast test pipeline (DecodeSampler, JitterScale, MultiCrop, "
    "Normalization, PackOutput)",
    sampler="index_linspace",
    resize="pil_bilinear",
    center_crop="ceil",
    three_crop="uniform_crop",
    pixel_scale=255.0,
    slow_frames="linspace",
    view_fusion="sum",
    single_view="num_frames indices spread over num_frames * sampling_rate * fps / 30 decoded frames from the first "
    "frame at or after start_sec (decoder output order), Pillow resize, the middle of MultiCrop's 3 crops",
    multi_view="DecodeSampler(test_mode) with temporal_num_clips=C: clip k starts at frame (N - clip) * k / C of "
    "the container's frame count N; MultiCrop's 3 crops; MultiCropMetric sums the views (served as the mean)",
)

PYSLOWFAST = Recipe(
    name=Toolbox.PYSLOWFAST,
    toolbox="PySlowFast 1.0 Kinetics test loader (slowfast/datasets/decoder.py PyAV path, spatial_sampling)",
    sampler="pts_linspace",
    resize="torch_bilinear",
    center_crop="ceil",
    three_crop="uniform_crop",
    pixel_scale=255.0,
    slow_frames="linspace",
    view_fusion="sum",
    single_view="the first frame at or after start_sec (frames sorted by timestamp), then num_frames frames spread "
    "over num_frames * sampling_rate * fps / 30 frames, torch bilinear resize, uniform_crop's middle crop",
    multi_view="decoder.decode(clip_idx=k, num_clips=C): clip k starts at frame (N - clip) * k / C of the "
    "container's frame count, located by timestamp (duration / N per frame); uniform_crop's 3 crops; TestMeter "
    "sums the views (served as the mean)",
)

RECIPES = {recipe.name: recipe for recipe in (PYTORCHVIDEO, MMACTION2, PADDLEVIDEO, PYSLOWFAST)}
