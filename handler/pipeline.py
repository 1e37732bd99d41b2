"""The serving pipeline without TorchServe: requests in, one response (or one error) per request out.

Data flow for a batch (the requests of a batch are prepared in parallel, in a bounded thread pool: PyAV and
torch release the GIL)::

    VideoRequest ─decode_clip─▶ T frames (H, W, 3) uint8 ─gather_frames─▶ (T, 2S, 2S, 3) uint8 (pinned on GPU)
          │                                                                       │ to the model's device
          └─ RequestError (bad bytes, empty window, ...) stays in its slot        ▼ finish: (3, T, S, S) float
                                                                            stack ▼ (N, 3, T, S, S)
                                      one forward (channels_last_3d, autocast): [slow, fast] or clip ─▶ top-k

Clips, not requests, are what gets stacked, so a request that later expands into several clips shares the
same forward with the others.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from handler.checkpoints import load_model
from handler.container import VideoInfo, probe, video_duration
from handler.decode_limits import DecodeLimits
from handler.errors import RequestError
from handler.export import EXPORT_FORMATS, ExportedModel, ExportFormat, load_exported
from handler.models import ClipSpec, ModelSpec
from handler.networks import fold_batch_norms
from handler.request import VideoRequest, format_views
from handler.sampling import iter_sampled_clips
from handler.timeline import intervals, part_starts, window_count
from handler.transforms import CropGatherer, model_inputs

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16", "int8"]
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class InferenceOptions:
    """How a worker runs its model and prepares clips (the ``inference:`` section of model-config.yaml).

    Attributes:
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast of the forward (weights stay fp32; fp16 is for
            GPUs). Results then differ from fp32 by rounding: see docs/performance.md for measured agreement.
            With ``export=openvino``: ``fp32``, ``bf16`` (OpenVINO's precision hint) or ``int8`` (NNCF
            quantization at archive time, calibrated on videos; :mod:`handler.export`).
        channels_last: run the network in ``channels_last_3d`` memory format (same results to float rounding,
            faster convolutions on CPU and GPU). Not for ``export=aoti``, which is compiled contiguous
            (:mod:`handler.export`); see :attr:`network_channels_last`.
        fold_batchnorm: fold each batch norm into the convolution before it (same results to float rounding).
        compile: ``torch.compile`` the network at load (slow start: minutes on CPU; needs a C++ compiler there).
        warmup: run one forward at load, so the first request does not pay for lazy initialisation.
        decode_workers: requests of a batch prepared at once (threads); 0 = one per CPU core the worker may use.
        max_clips_per_forward: clips (views) in one forward; a batch with more (multi-view requests) runs
            several, and requests share them.
        export: the form of the network in the archive: ``auto`` (the default: the checkpoint, and the OpenVINO
            fp32 network where it passed its archive-time check against eager; a worker on a CPU serves that, a
            worker on a GPU, or with ``precision`` other than fp32 or ``compile``, serves eager:
            :func:`resolve_engine`), ``eager`` (the checkpoint, built into the Python network at load),
            ``torchscript``, ``aoti`` or ``openvino`` (built by ``slowfast-serve archive``;
            :mod:`handler.export`). An export is built with this section's ``channels_last``,
            ``fold_batchnorm`` and ``max_clips_per_forward`` (and, for ``openvino``, ``precision``); ``aoti``
            runs in fp32, ``openvino`` on the CPU, and neither is compiled again.
    """

    precision: Precision = "fp32"
    channels_last: bool = True
    fold_batchnorm: bool = True
    compile: bool = False
    warmup: bool = True
    decode_workers: int = 0
    max_clips_per_forward: int = 8
    export: ExportFormat = "auto"

    @property
    def network_channels_last(self) -> bool:
        """Whether the network (and its input batches) use ``channels_last_3d``."""
        return self.channels_last and self.export not in ("aoti", "openvino")

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8", *_AUTOCAST):
            raise ValueError(f"precision must be fp32, bf16, fp16 or int8, got {self.precision!r}")
        if self.precision == "int8" and self.export != "openvino":
            raise ValueError(
                "precision=int8 is OpenVINO's: add export=openvino (quantized when the archive is built, calibrated "
                "on the videos given with --calibration)"
            )
        if self.export == "openvino" and self.precision == "fp16":
            raise ValueError("export=openvino runs on the CPU in fp32, bf16 or int8; fp16 autocast is for GPUs")
        if self.export not in EXPORT_FORMATS:
            raise ValueError(f"export must be one of {', '.join(EXPORT_FORMATS)}, got {self.export!r}")
        if self.export not in ("auto", "eager") and self.compile:
            raise ValueError(f"compile applies to the eager network; an export={self.export} archive is already built")
        if self.export == "aoti" and self.precision != "fp32":
            raise ValueError(
                f"export=aoti runs in fp32 (autocast does not reach compiled kernels); for precision={self.precision} "
                "use export=torchscript or eager"
            )
        for name in ("channels_last", "fold_batchnorm", "compile", "warmup"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, least in (("decode_workers", 0), ("max_clips_per_forward", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _check_export_options(model: ExportedModel, options: InferenceOptions, path: str | Path) -> None:
    """The archive's settings must describe the export they ship: a hand-edited setting would otherwise be
    silently ignored (the options are baked into the export)."""
    built = model.metadata
    wanted = {
        "channels_last": options.network_channels_last,
        "fold_batchnorm": options.fold_batchnorm,
        "max_clips_per_forward": options.max_clips_per_forward,
    }
    found = {
        "channels_last": built.channels_last,
        "fold_batchnorm": built.fold_batchnorm,
        "max_clips_per_forward": built.max_batch,
    }
    if options.export == "openvino":  # the precision is baked into an OpenVINO export (int8 weights, bf16 hint)
        wanted["precision"], found["precision"] = options.precision, built.precision
    differ = [
        f"{name}: settings {wanted[name]}, export {found[name]}" for name in wanted if wanted[name] != found[name]
    ]
    if differ:
        raise ValueError(f"{path} was exported with other inference options ({'; '.join(differ)}); rebuild the archive")


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """The autocast of a ``precision`` forward on ``device`` (none for fp32 and int8)."""
    dtype = _AUTOCAST.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def cpu_count() -> int:
    """CPU cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def select_device(gpu_id: int | None) -> torch.device:
    """``cuda:{gpu_id}`` when TorchServe assigned a GPU and CUDA is usable, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


@dataclass
class PreparedClip:
    """The views of one request, ready for the model.

    Attributes:
        clips: ``(V, 3, T, S, S)`` float32, normalised, on the model's device: every temporal view's crops, in
            order (view 0's crops first).
        windows: ``[start_sec, end_sec)`` of each temporal view.
        source_frames, info, rotation: the first view's decoded frame count and the video's metadata (the
            frames are not kept: they are no longer needed once the tensors exist).
        decode_ms, preprocess_ms: wall-clock time of the two stages (preprocess includes the copy to the device).
    """

    clips: torch.Tensor
    windows: list[tuple[float, float]]
    source_frames: int
    info: VideoInfo
    rotation: int
    decode_ms: float
    preprocess_ms: float


@dataclass
class PreparedView:
    """One temporal view of a request, ready for the model: :class:`PreparedClip`'s fields for that view alone
    (``clips`` is ``(K, 3, T, S, S)``, its crops)."""

    clips: torch.Tensor
    window: tuple[float, float]
    source_frames: int
    info: VideoInfo
    rotation: int
    decode_ms: float
    preprocess_ms: float


def request_memory_mb(info: VideoInfo, clip: ClipSpec, views: tuple[int, int], limits: DecodeLimits) -> float:
    """An upper estimate of the memory one request holds at once while it is prepared, in MiB, from the stream
    header alone (before decoding): one window's decoded frames (YUV 4:2:0, 1.5 bytes a pixel; a window over
    ``max_window_mb`` is decoded twice, holding only the frames it keeps), one RGB frame, the kept frames' crop
    pixels (at most ``2S x 2S`` per crop and frame; every view's at once for the recipes that index frames, as
    decord) and one view's float clips. The views are prepared one after the other, so the temporal count
    matters only for those recipes."""
    temporal, crops = views
    pixels = info.width * info.height
    window = (math.ceil((info.fps or 30.0) * clip.duration_sec) + 1) * pixels * 1.5
    if window > limits.max_window_mb * 2**20:  # counted up to the limit, then decoded again keeping the sampled
        window = max(limits.max_window_mb * 2**20, clip.num_frames * pixels * 1.5)
    # torch's bilinear is gathered before it is computed (two taps a pixel); the toolboxes' resize comes first.
    gathered_side = 2 * clip.crop_size if clip.recipe.resize == "torch_bilinear" else clip.crop_size
    held_views = temporal if clip.recipe.sampler in ("frame_interval", "index_linspace") else 1
    gathered = held_views * clip.num_frames * crops * gathered_side**2 * 3
    floats = crops * 3 * clip.num_frames * clip.crop_size**2 * 4
    return (window + pixels * 3 + gathered + floats) / 2**20


@dataclass(frozen=True)
class CpuEngine:
    """The OpenVINO network an ``export=auto`` archive carries for CPU workers, or why it carries none.

    Attributes:
        file: the ``.ov.zip`` (fp32, checked against eager when the archive was built), or ``None``.
        unavailable: why there is none (the conversion failed or disagreed with eager), when ``file`` is ``None``.
    """

    file: Path | None
    unavailable: str = ""


def resolve_engine(
    options: InferenceOptions, device: torch.device, checkpoint: str | Path, openvino: CpuEngine | None
) -> tuple[InferenceOptions, str | Path]:
    """The engine an ``export=auto`` worker serves, exactly (the fastest whose answers equal eager's to float
    rounding): OpenVINO fp32 on a CPU where the archive carries a checked network that loads here; eager on a GPU,
    with ``precision`` other than fp32 (autocast is eager's), with ``compile``, or when there is no OpenVINO
    network (one log line says why). Returns the options with a concrete ``export`` and the file to load."""
    eager = replace(options, export="eager")
    if device.type != "cpu" or options.precision != "fp32" or options.compile:
        return eager, checkpoint
    if openvino is None:  # in-process use with a checkpoint alone
        return eager, checkpoint
    if openvino.file is None:
        logger.warning("serving eager on the CPU: %s", openvino.unavailable)
        return eager, checkpoint
    chosen = replace(options, export="openvino")
    try:
        import openvino as _  # noqa: F401  (an image without OpenVINO serves eager)
    except ImportError as e:
        logger.warning("serving eager on the CPU: OpenVINO cannot be imported here (%s)", e)
        return eager, checkpoint
    return chosen, openvino.file


@dataclass(frozen=True)
class _Crash:
    """An unexpected exception raised while preparing a request in a worker thread."""

    error: BaseException


_DONE = object()  # a producer has no more views


def _views_or_error(slot: int, views: Iterator[Any]) -> Iterator[tuple[int, Any]]:
    """``(slot, view)`` for each view, then, if preparing fails with a :class:`RequestError`, ``(slot, error)``."""
    try:
        for view in views:
            yield slot, view
    except RequestError as error:
        yield slot, error


def stream_prepared(
    pool: ThreadPoolExecutor,
    workers: int,
    work: Sequence[tuple[int, Any]],
    prepare: Callable[[Any, int], Iterator[Any]],
) -> Iterator[tuple[int, Any]]:
    """``(slot, item)`` for every item ``prepare(request, threads)`` yields for every request of ``work``, as they
    are prepared (a request's in order), and ``(slot, error)`` once for a request whose preparation raises a
    :class:`RequestError`. At most ``workers`` requests are prepared at once in ``pool``, each with its share of
    the cores as decoder threads, and one prepared item waits to be taken: preparation pauses rather than piling
    items up. Any other exception is raised here (it fails the batch, as it would unthreaded)."""
    parallel = min(len(work), workers)
    if parallel <= 1:
        for slot, request in work:
            yield from _views_or_error(slot, prepare(request, 0))
        return
    threads = max(1, cpu_count() // parallel)
    ready: queue.Queue = queue.Queue(maxsize=1)  # one item handed over at a time: producers wait, not pile up
    stop = threading.Event()

    def produce(slot: int, request: Any) -> None:
        try:
            for item in _views_or_error(slot, prepare(request, threads)):
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:
            ready.put((slot, _Crash(error)))
        finally:
            ready.put((slot, _DONE))

    futures = [pool.submit(produce, slot, request) for slot, request in work]
    running = len(futures)
    try:
        while running:
            slot, item = ready.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, _Crash):
                raise item.error
            else:
                yield slot, item
    finally:
        stop.set()
        for future in futures:
            future.cancel()
        while any(not future.done() for future in futures):  # drain, so no producer stays blocked
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)


def video_summary(info: VideoInfo, rotation: int) -> dict[str, Any]:
    """An answer's ``"video"``: what the container says, and the rotation applied to show the frames upright."""
    return {
        "width": info.width,
        "height": info.height,
        "fps": None if info.fps is None else round(info.fps, 3),
        "duration_sec": None if info.duration_sec is None else round(info.duration_sec, 3),
        "codec": info.codec,
        "container": info.container,
        "rotation": rotation,
    }


class ServedModel:
    """What a served model of either kind (:class:`VideoClassifier`, :class:`handler.detection_pipeline.ActionDetector`)
    has: a device, its inference options, the threads that prepare a batch's requests, a warm-up forward."""

    device: torch.device
    options: InferenceOptions
    kind: str  # "classifier" or "detector": what the web page and the models listing call it
    labels: list[str]
    weights: str

    def _start(self) -> None:
        """The preparation threads (``decode_workers``, 0: one per usable core) and the warm-up forward."""
        self.decode_workers = self.options.decode_workers or cpu_count()
        self._pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="prepare")
        if self.options.warmup:
            self.warm_up()

    def warm_up(self) -> None:
        raise NotImplementedError

    @property
    def engine(self) -> dict[str, str]:
        """What runs the forward, as responses report it: ``{"name": "openvino" | "eager" | ..., "precision":
        "fp32" | ..., "device": "cpu" | "cuda:0"}``."""
        return {"name": self.options.export, "precision": self.options.precision, "device": str(self.device)}

    def clip(self) -> dict[str, float]:
        """One input clip: ``{"frames": frames fed to the network, "seconds": its nominal length}``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the management API's customized description shows (``customizedMetadata``): the model, its kind,
        clip, number of classes, weights and the engine this worker runs."""
        return {
            "model": self.spec.name,
            "kind": self.kind,
            "clip": self.clip(),
            "classes": len(self.labels),
            "weights": self.weights,
            "engine": self.engine,
        }


class VideoClassifier(ServedModel):
    """A loaded model with its labels: classifies batches of video requests.

    Args:
        spec: the registry entry (clip spec, output kind).
        model: the network in eval mode (moved to ``device`` here), or a loaded export (on ``device``).
        labels: class names, index = class id; must match the model's head size.
        weights: what responses report as ``"weights"``.
        device: where the forward runs.
        limits: bounds on each request's decoding work.
        options: precision, memory format, compilation and preparation threads.
    """

    kind = "classifier"

    def __init__(
        self,
        spec: ModelSpec,
        model: torch.nn.Module,
        labels: Sequence[str],
        weights: str,
        device: torch.device,
        limits: DecodeLimits | None = None,
        options: InferenceOptions | None = None,
    ) -> None:
        self.spec = spec
        self.labels = list(labels)
        self.weights = weights
        self.device = device
        self.limits = limits or DecodeLimits()
        options = options or InferenceOptions()
        if options.export == "auto":  # a network given as it is: say what it is
            built = model.metadata.format if isinstance(model, ExportedModel) else "eager"
            options = replace(options, export=built)
        self.options = options
        self.model = self._optimised(model)
        self._start()

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        checkpoint: str | Path,
        labels: Sequence[str],
        device: torch.device,
        limits: DecodeLimits | None = None,
        options: InferenceOptions | None = None,
        openvino: CpuEngine | None = None,
    ) -> VideoClassifier:
        """Builds ``spec`` and loads ``checkpoint`` into it, or loads the export ``checkpoint`` is (per
        ``options.export``; ``auto`` picks by :func:`resolve_engine`, the OpenVINO network being ``openvino``),
        and checks that ``labels`` fit the classifier head."""
        options = options or InferenceOptions()
        if options.export == "auto":
            chosen, artifact = resolve_engine(options, device, checkpoint, openvino)
            if chosen.export != "eager":
                try:
                    return cls.load(spec, artifact, labels, device, limits, chosen)
                except (ValueError, RuntimeError) as e:  # e.g. an IR this OpenVINO cannot read: eager still can
                    logger.warning("serving eager on the CPU: the archive's OpenVINO network does not load (%s)", e)
            options = replace(options, export="eager")
        model: torch.nn.Module | ExportedModel
        if options.export == "eager":
            model, weights = load_model(spec, checkpoint)
            description, num_classes = weights.description, weights.num_classes
        else:
            model = load_exported(checkpoint, options.export, device, spec)
            _check_export_options(model, options, checkpoint)
            description, num_classes = model.metadata.weights, model.metadata.num_classes
        if len(labels) != num_classes:
            raise ValueError(
                f"{len(labels)} labels for a model with {num_classes} classes ({checkpoint}); "
                "give the label file the checkpoint was trained with"
            )
        return cls(spec, model, labels, description, device, limits, options)

    def _optimised(self, model: torch.nn.Module | ExportedModel) -> torch.nn.Module | ExportedModel:
        if isinstance(model, ExportedModel):
            return model  # folded, laid out and compiled when it was exported
        model = model.to(self.device)
        if self.options.fold_batchnorm:
            fold_batch_norms(model.eval())
        if self.options.network_channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        if self.options.compile:
            model = torch.compile(model)
        return model

    def clip(self) -> dict[str, float]:
        return {"frames": self.spec.clip.num_frames, "seconds": round(self.spec.clip.duration_sec, 3)}

    def warm_up(self) -> None:
        """One forward of a zero clip: cuDNN / oneDNN kernel choice, CUDA context, compilation happen now."""
        clip = self.spec.clip
        started = time.perf_counter()
        self.probabilities(torch.zeros((1, 3, clip.num_frames, clip.crop_size, clip.crop_size)))
        logger.info("warm-up forward on %s: %.0f ms", self.device, (time.perf_counter() - started) * 1000)

    def prepare(self, request: VideoRequest, threads: int = 0) -> PreparedClip:
        """Every view of :meth:`prepare_views`, collected: the request's clips in one tensor.

        Raises:
            RequestError: for bad input.
        """
        views = list(self.prepare_views(request, threads))
        first = views[0]
        clips = [view.clips for view in views]
        return PreparedClip(
            clips=clips[0] if len(clips) == 1 else torch.cat(clips),  # one view: no copy
            windows=[view.window for view in views],
            source_frames=first.source_frames,
            info=first.info,
            rotation=first.rotation,
            decode_ms=sum(view.decode_ms for view in views),
            preprocess_ms=sum(view.preprocess_ms for view in views),
        )

    def prepare_views(self, request: VideoRequest, threads: int = 0) -> Iterator[PreparedView]:
        """Decodes the request's temporal views one after the other (with ``threads`` decoder threads, 0 =
        FFmpeg's choice) and preprocesses each view's crops: each frame is reduced to the pixels the crops read as
        it is decoded (:class:`~handler.transforms.CropGatherer`), and interpolated on the model's device. A view
        is decoded only once the previous one has been taken, so a request holds about one view at a time
        (:func:`request_memory_mb`, checked against ``max_request_mb`` before decoding).

        Raises:
            RequestError: for bad input (possibly after some views were yielded), or 413 over the memory budget.
        """
        clip = self.spec.clip
        temporal, spatial = request.views
        started = time.perf_counter()
        video, limits = request.video, self.limits
        self._check_memory(request)
        if request.mode == "timeline":
            stride = self._stride(request)
            starts = self._timeline_starts(request, stride)
            if len(starts) > limits.max_timeline_windows:
                raise RequestError(
                    413,
                    "TimelineTooLong",
                    f"the timeline needs {len(starts)} windows of {stride:g} s; this service classifies at most "
                    f"{limits.max_timeline_windows} per request: use a larger stride_sec, or let the client cut "
                    "the video into parts (slowfast-serve timeline, Client.timeline; docs/timeline.md)",
                    ("max_timeline_windows", limits.max_timeline_windows),
                )
            placement: dict[str, Any] = {"starts": starts, "origin_pts": request.origin_pts}
        elif temporal > 1:
            placement = {"spread": temporal, "start_sec": request.start_sec}
        else:
            placement = {"starts": [request.start_sec]}
        gatherer = CropGatherer(clip, [None] if spatial == 1 else [0, 1, 2])  # None: the recipe's center crop
        decoded = iter_sampled_clips(video, clip, **placement, limits=limits, threads=threads, reduce=gatherer)
        while True:
            view = next(decoded, None)
            if view is None:
                return
            decoded_at = time.perf_counter()
            clips = gatherer.finish_crops(view.frames, device=self.device)
            done = time.perf_counter()
            yield PreparedView(
                clips=clips,
                window=(view.start_sec, view.end_sec),
                source_frames=view.source_frames,
                info=view.info,
                rotation=view.rotation,
                decode_ms=(decoded_at - started) * 1000,
                preprocess_ms=(done - decoded_at) * 1000,
            )
            started = time.perf_counter()

    def _check_memory(self, request: VideoRequest) -> None:
        """413 ``RequestTooLarge`` when :func:`request_memory_mb` of the request exceeds ``max_request_mb``."""
        clip, limits = self.spec.clip, self.limits
        views = (1, request.views[1]) if request.mode == "timeline" else request.views
        info = probe(request.video)
        needed = request_memory_mb(info, clip, views, limits)
        if needed <= limits.max_request_mb:
            return
        advice = ["a video scaled down (e.g. ffmpeg -i in.mp4 -vf scale=-2:720 out.mp4)"]
        if views[1] > 1:
            advice.append(f"views={views[0]}x1 (one crop per clip)")
        if clip.recipe.sampler in ("frame_interval", "index_linspace") and views[0] > 1:
            advice.append("fewer clips (views=3x1)")
        raise RequestError(
            413,
            "RequestTooLarge",
            f"preparing this request would hold about {needed:.0f} MB ({info.width}x{info.height} frames at "
            f"{info.fps or 30:.3g} fps, views {format_views(views)}); this service prepares requests of up to "
            f"{limits.max_request_mb} MB: send {' or '.join(advice)}",
        )

    @torch.inference_mode()
    def scores(self, clips: torch.Tensor) -> torch.Tensor:
        """The network's output for a clip batch, as its head makes it (logits, or probabilities for the models
        whose head ends in a softmax).

        Args:
            clips: ``(N, 3, T, S, S)`` float32 normalised clips (any device), N at most ``max_clips_per_forward``
                for an ``aoti`` export.

        Returns:
            ``(N, num_classes)`` float32 on the CPU.
        """
        batch = clips.to(self.device, non_blocking=True)
        if self.options.network_channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        with self._autocast():
            output = self.model(model_inputs(batch, self.spec.clip))
        return output.float().cpu()

    def probabilities(self, clips: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a clip batch: :meth:`scores`, with a softmax for logit heads.

        Returns:
            ``(N, num_classes)`` float32 on the CPU, each row summing to 1.
        """
        output = self.scores(clips)
        return torch.softmax(output, dim=1) if self.spec.output == "logits" else output

    def _autocast(self) -> contextlib.AbstractContextManager:
        # An OpenVINO export computes in the precision it was built with; autocast would not reach it.
        return autocast(self.device, "fp32" if self.options.export == "openvino" else self.options.precision)

    def prepare_all(self, requests: Sequence[VideoRequest]) -> list[PreparedClip | RequestError]:
        """:meth:`prepare` of every request, at most ``decode_workers`` at once; the cores are shared out as
        decoder threads (one request alone gets FFmpeg's default: all of them). A failure is returned in its
        slot, not raised.
        """
        parallel = min(len(requests), self.decode_workers)
        if parallel <= 1:
            return [self._prepare_or_error(request, 0) for request in requests]
        threads = max(1, cpu_count() // parallel)
        return list(self._pool.map(lambda request: self._prepare_or_error(request, threads), requests))

    def _prepare_or_error(self, request: VideoRequest, threads: int) -> PreparedClip | RequestError:
        try:
            return self.prepare(request, threads)
        except RequestError as error:
            return error

    def classify(self, requests: Sequence[VideoRequest | RequestError]) -> list[dict[str, Any] | RequestError]:
        """Runs a batch: one result per request, in order.

        An item that is already a :class:`RequestError` (it failed parsing), or fails decoding, stays an error in
        its slot. The requests' views are prepared as a stream (:meth:`prepare_views`, at most ``decode_workers``
        requests at once) and go through the model together, ``max_clips_per_forward`` clips per forward as they
        are ready; only their probabilities are kept. A batch of single-view requests is one forward. A request's
        answer averages its views' probabilities.
        """
        results: list[Any] = list(requests)  # errors stay in place; requests are replaced by responses
        work = [(i, request) for i, request in enumerate(requests) if isinstance(request, VideoRequest)]
        views: dict[int, list[PreparedView]] = {i: [] for i, _ in work}
        probs: dict[int, list[torch.Tensor]] = {i: [] for i, _ in work}
        pending: list[tuple[int, torch.Tensor]] = []  # (slot, one view's crops), waiting for a forward
        step = self.options.max_clips_per_forward
        inference_s = 0.0

        def forward(count: int) -> None:
            nonlocal inference_s
            taken, parts, owners = 0, [], []
            while pending and taken < count:
                slot, crops = pending[0]
                room = count - taken
                if len(crops) > room:  # a view's crops may straddle two forwards
                    pending[0] = (slot, crops[room:])
                    crops = crops[:room]
                else:
                    pending.pop(0)
                parts.append(crops)
                owners.append((slot, len(crops)))
                taken += len(crops)
            batch = parts[0] if len(parts) == 1 else torch.cat(parts)
            parts.clear()  # the batch is a copy: the views' own tensors go before the forward, not after it
            started = time.perf_counter()
            out = self.probabilities(batch)
            inference_s += time.perf_counter() - started
            del batch
            for (slot, _), rows in zip(owners, out.split([n for _, n in owners]), strict=True):
                if slot in probs:  # a request that failed meanwhile has no slot left
                    probs[slot].append(rows)

        for slot, outcome in self._stream_views(work):
            if isinstance(outcome, RequestError):
                results[slot] = outcome
                views.pop(slot)
                probs.pop(slot)
                pending[:] = [(s, crops) for s, crops in pending if s != slot]
                continue
            views[slot].append(outcome)
            pending.append((slot, outcome.clips))
            outcome.clips = torch.empty(0)  # the forward holds the clips now (a slice would keep their memory)
            while sum(len(crops) for _, crops in pending) >= step:
                forward(step)
        while pending:
            forward(step)
        for slot, prepared in views.items():
            clip = PreparedClip(
                clips=torch.empty(0),
                windows=[view.window for view in prepared],
                source_frames=prepared[0].source_frames,
                info=prepared[0].info,
                rotation=prepared[0].rotation,
                decode_ms=sum(view.decode_ms for view in prepared),
                preprocess_ms=sum(view.preprocess_ms for view in prepared),
            )
            results[slot] = self._response(
                torch.cat(probs[slot]), requests[slot], clip, len(requests), inference_s * 1000
            )
        return results

    def _stream_views(
        self, work: Sequence[tuple[int, VideoRequest]]
    ) -> Iterator[tuple[int, PreparedView | RequestError]]:
        """``(slot, view)`` for every view of every request, as they are prepared (a request's in order), and
        ``(slot, error)`` once for a request that fails (:func:`stream_prepared`)."""
        return stream_prepared(self._pool, self.decode_workers, work, self.prepare_views)

    def _timeline_starts(self, request: VideoRequest, stride: float) -> list[float]:
        """The timeline's window starts: all of the video's from ``start_sec``, or, for a part, windows
        ``first_window`` .. ``first_window + window_count - 1`` of the whole video's grid."""
        start = request.start_sec
        total = lambda: window_count(video_duration(request.video), start, stride)  # noqa: E731
        return part_starts(start, stride, request.first_window, request.window_count, total)

    def _stride(self, request: VideoRequest) -> float:
        """Seconds between a timeline's windows: the request's, else one clip (windows side by side)."""
        return request.stride_sec or self.spec.clip.duration_sec

    def _top(self, probs: torch.Tensor, k: int) -> list[dict[str, Any]]:
        scores, ids = probs.topk(k)
        return [
            {"label": self.labels[i], "class_id": i, "score": s}
            for s, i in zip(scores.tolist(), ids.tolist(), strict=True)
        ]

    def _timeline(self, views: torch.Tensor, request: VideoRequest, clip: PreparedClip) -> dict[str, Any]:
        """Per-window answers and the runs of windows that agree on their top class, merged into intervals
        (each window stands for ``[start, start + stride)``, the last one ending with the video; a part's
        intervals are not cut short, as the part's end need not be the video's)."""
        stride = self._stride(request)
        segments = [
            {"start_sec": round(start, 3), "end_sec": round(end, 3), "predictions": self._top(probs, request.top_k)}
            for (start, end), probs in zip(clip.windows, views, strict=True)
        ]
        end_of_video = None if request.origin_pts is not None else clip.info.duration_sec
        starts = [start for start, _ in clip.windows]
        merged = intervals(starts, [segment["predictions"][0] for segment in segments], stride, end_of_video)
        return {"start_sec": request.start_sec, "stride_sec": stride, "segments": segments, "intervals": merged}

    def _response(
        self, views: torch.Tensor, request: VideoRequest, clip: PreparedClip, batch_size: int, inference_ms: float
    ) -> dict[str, Any]:
        """The JSON answer; ``views`` holds one probability row per clip of the request (averaged for the
        top-level predictions)."""
        info = clip.info
        extra = {"timeline": self._timeline(views, request, clip)} if request.mode == "timeline" else {}
        return {
            "model": self.spec.name,
            "weights": self.weights,
            "engine": self.engine,
            "predictions": self._top(views.mean(dim=0), request.top_k),
            **extra,
            "clip": {
                "start_sec": round(clip.windows[0][0], 3),
                "end_sec": round(clip.windows[0][1], 3),
                "frames": self.spec.clip.num_frames,
                "source_frames": clip.source_frames,
            },
            "views": {
                "clips": request.views[0],
                "crops": request.views[1],
                "windows": [[round(start, 3), round(end, 3)] for start, end in clip.windows],
            },
            "video": video_summary(info, clip.rotation),
            "batch_size": batch_size,
            "timing_ms": {
                "decode": round(clip.decode_ms, 1),
                "preprocess": round(clip.preprocess_ms, 1),
                "inference": round(inference_ms, 1),
            },
        }
