"""Fuzzing the decode and preprocessing path with mutated valid videos.

Whatever the bytes, the pipeline returns a clip of the promised shape or raises the project's RequestError
(a 4xx with a message), nothing else, and never hangs. Mutations: bit flips, truncation, zeroed or repeated
spans, and corrupted container box sizes (mp4 ``moov``/``stsz``/... and the first bytes of each box).

CI runs a bounded, deterministic set. A longer, random run::

    FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import os
import re
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.decode import decode_clip
from handler.decode_limits import DecodeLimits
from handler.errors import RequestError
from handler.frames import DecodedClip
from handler.models import get_spec
from handler.transforms import preprocess_frames
from tests.videos import encode, moving_frames

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
CLIP = get_spec("motion_demo").clip
# Tight limits keep a runaway mutation cheap; they are part of what is being tested.
LIMITS = DecodeLimits(max_decoded_frames=400, max_decode_seconds=10.0)
MP4_BOXES = re.compile(
    rb"moov|trak|mdia|minf|stbl|stsd|stsz|stco|co64|stts|stss|ctts|stsc|mdhd|tkhd|mvhd|mdat|ftyp|avcC"
)


def _seeds() -> dict[str, bytes]:
    frames = moving_frames(45, 48, 64)
    return {
        "mp4 h264": encode(frames, fps=30, options={"g": "15"}),
        "mkv vp9": encode(frames, fps=30, codec="libvpx-vp9", container="matroska"),
        "avi mpeg4": encode(frames, fps=30, codec="mpeg4", container="avi"),
        "webm vp8": encode(frames, fps=24, codec="libvpx", container="webm"),
    }


SEEDS = _seeds()


@st.composite
def mutated_videos(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip bits", "truncate", "zero span", "repeat span", "box size"]))
        size = len(data)
        if size == 0:
            break
        if kind == "flip bits":
            for _ in range(draw(st.integers(1, 16))):
                data[draw(st.integers(0, size - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(0, size - 1)) :]
        elif kind in ("zero span", "repeat span"):
            start = draw(st.integers(0, size - 1))
            end = min(size, start + draw(st.integers(1, 4096)))
            data[start:end] = bytes(end - start) if kind == "zero span" else data[start:end] * 2
        else:
            boxes = [m.start() - 4 for m in MP4_BOXES.finditer(bytes(data)) if m.start() >= 4]
            if boxes:
                offset = draw(st.sampled_from(boxes))
                value = draw(
                    st.sampled_from([0, 1, 7, 8, 0xFFFFFFFF, 0x7FFFFFFF, size, size * 2]) | st.integers(0, 2**32 - 1)
                )
                data[offset : offset + 4] = struct.pack(">I", value)
    return bytes(data)


@pytest.mark.timeout(900, method="thread")  # a hang inside FFmpeg cannot be interrupted any other way
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated_videos(), start_sec=st.sampled_from([0.0, 0.4, 1.2]))
def test_mutated_videos_give_a_clip_or_a_request_error(data: bytes, start_sec: float) -> None:
    outcome = _decode(data, start_sec)
    if isinstance(outcome, RequestError):
        assert 400 <= outcome.status < 500
        assert outcome.message
        return
    assert len(outcome.frames) == CLIP.num_frames
    assert outcome.stacked().dtype == torch.uint8
    tensor = preprocess_frames(outcome.frames, CLIP)
    assert tensor.shape == (3, CLIP.num_frames, CLIP.crop_size, CLIP.crop_size)
    assert torch.isfinite(tensor).all()


def _decode(data: bytes, start_sec: float) -> DecodedClip | RequestError:
    """The clip, or the RequestError it raised; any other exception propagates and fails the test."""
    try:
        return decode_clip(
            data, start_sec=start_sec, end_sec=start_sec + CLIP.duration_sec, num_samples=CLIP.num_frames, limits=LIMITS
        )
    except RequestError as error:
        return error


def test_the_seeds_themselves_decode() -> None:
    for name, data in SEEDS.items():
        clip = decode_clip(data, start_sec=0.0, end_sec=CLIP.duration_sec, num_samples=CLIP.num_frames)
        assert clip.source_frames == 45, name
