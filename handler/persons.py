"""Person boxes for AVA action detection when a request gives none: the detector an archive carries.

Chosen when the archive is built (``DETECTOR=``):

- ``fasterrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn_v2``: torchvision's COCO Faster R-CNN (the detection
  tutorial uses Detectron2's R50-FPN Faster R-CNN, which has no offline build here; torchvision's is the same
  family). COCO's person class only (label 1 in torchvision's numbering), scores at or above the threshold
  (0.75 by default, the tutorial's). Its weights are read like every checkpoint here (nothing pickled runs).
- ``hog``: OpenCV's built-in HOG + linear SVM people detector (Dalal and Triggs): no weight file, offline, fast on
  a CPU, but made for upright, fully visible pedestrians of at least 64x128 pixels; it misses sitting, partly
  hidden and small people, which AVA is full of. Its score is the SVM's margin, not a probability.

Both run on the keyframe's frame as the action model sees it: upright RGB, full resolution. The boxes they find
are in that frame's pixels, ``[x1, y1, x2, y2]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from handler.checkpoint_files import read_checkpoint

#: The detectors an archive can carry, and their default score thresholds.
DETECTORS = {"fasterrcnn_resnet50_fpn": 0.75, "fasterrcnn_resnet50_fpn_v2": 0.75, "hog": 0.5}
TORCHVISION_DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2")
_TORCHVISION_PERSON = 1  # COCO's person in torchvision's category numbering (0 is the background)
_HOG_OVERLAP = 0.5  # boxes of one person found at several scales: the best of those overlapping more is kept


@dataclass(frozen=True)
class PersonBoxes:
    """People found in one frame, best first.

    Attributes:
        boxes: ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` in pixels of the frame.
        scores: ``(N,)`` float32: the detector's confidence (a probability for Faster R-CNN, HOG's SVM margin).
    """

    boxes: torch.Tensor
    scores: torch.Tensor


class PersonDetector(Protocol):
    """Finds people in a frame."""

    name: str
    weights: str  # what answers report: "random-init", "<file> sha256:<12 hex>" or "built-in"
    threshold: float

    def find(self, frame: torch.Tensor) -> PersonBoxes:
        """People in ``frame``, ``(H, W, 3)`` uint8 RGB, upright."""
        ...


class HogPersons:
    """OpenCV's HOG people detector (``cv2.HOGDescriptor_getDefaultPeopleDetector``), boxes whose SVM margin is
    at least ``threshold``, overlapping detections of one person merged by non-maximum suppression."""

    name = "hog"
    weights = "built-in"

    def __init__(self, threshold: float = DETECTORS["hog"]) -> None:
        import cv2

        if not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(
                f"this OpenCV ({cv2.__version__}) has no HOGDescriptor: OpenCV 5 ships it in its contrib build "
                "(opencv-contrib-python-headless, requirements.txt)"
            )
        self.threshold = threshold
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def find(self, frame: torch.Tensor) -> PersonBoxes:
        from torchvision.ops import nms

        # OpenCV's default parameters for people (its peopledetect sample): 8-pixel stride, 5% scale steps.
        rects, margins = self._hog.detectMultiScale(frame.numpy(), winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return PersonBoxes(torch.empty(0, 4), torch.empty(0))
        xywh = torch.as_tensor(rects, dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        scores = torch.as_tensor(margins, dtype=torch.float32).reshape(-1)
        kept = nms(boxes, scores, _HOG_OVERLAP)
        kept = kept[scores[kept] >= self.threshold]
        return PersonBoxes(boxes[kept], scores[kept])


class TorchvisionPersons:
    """torchvision's COCO Faster R-CNN, person boxes scoring at least ``threshold``.

    Args:
        name: one of :data:`TORCHVISION_DETECTORS`.
        checkpoint: torchvision's weights file (a plain state dict, as torchvision publishes it) or this
            project's random-init file (:func:`save_random_person_detector`).
        threshold: the lowest person score kept, in [0, 1].
        device: where it runs.
    """

    def __init__(self, name: str, checkpoint: str | Path, threshold: float, device: torch.device) -> None:
        read = read_checkpoint(checkpoint)
        network = build_torchvision_detector(name, threshold)
        try:
            network.load_state_dict(read.tensors, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{checkpoint} is not a {name} checkpoint: {str(e).splitlines()[0]}") from e
        self.name, self.threshold, self.device = name, threshold, device
        self.weights = read.description
        self._network = network.to(device)

    @torch.inference_mode()
    def find(self, frame: torch.Tensor) -> PersonBoxes:
        image = frame.to(self.device).permute(2, 0, 1).float() / 255.0  # (3, H, W) in [0, 1], as torchvision takes
        found = self._network([image])[0]
        person = (found["labels"] == _TORCHVISION_PERSON) & (found["scores"] >= self.threshold)
        return PersonBoxes(found["boxes"][person].float().cpu(), found["scores"][person].float().cpu())


def build_torchvision_detector(name: str, threshold: float = 0.05) -> torch.nn.Module:
    """torchvision's ``name`` with freshly initialised weights and no download (``weights_backbone=None``), in
    eval mode; detections below ``threshold`` are dropped inside it (its ``box_score_thresh``)."""
    from torchvision.models import detection

    if name not in TORCHVISION_DETECTORS:
        raise ValueError(f"unknown torchvision detector {name!r}; known: {', '.join(TORCHVISION_DETECTORS)}")
    builder = getattr(detection, name)
    return builder(weights=None, weights_backbone=None, box_score_thresh=threshold).eval()


def torchvision_weights_url(name: str) -> str:
    """Where torchvision publishes ``name``'s COCO weights (its own weights enum says)."""
    from torchvision.models import detection

    enum = {
        "fasterrcnn_resnet50_fpn": detection.FasterRCNN_ResNet50_FPN_Weights,
        "fasterrcnn_resnet50_fpn_v2": detection.FasterRCNN_ResNet50_FPN_V2_Weights,
    }[name]
    return enum.COCO_V1.url


def save_random_person_detector(name: str, path: str | Path, *, seed: int = 0) -> Path:
    """A randomly initialised torchvision detector, marked random-init (plumbing tests only: it finds nothing
    meaningful, and answers say ``"weights": "random-init"`` for it)."""
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = build_torchvision_detector(name).state_dict()
    torch.save({"model_state": state, "random_init": True, "model": name, "seed": seed}, path)
    return path


def load_person_detector(
    name: str, checkpoint: str | Path | None, threshold: float, device: torch.device
) -> PersonDetector:
    """The detector ``name`` (:data:`DETECTORS`) with its weights (``None`` for ``hog``)."""
    if name == "hog":
        return HogPersons(threshold)
    if checkpoint is None:
        raise ValueError(f"the {name} person detector needs its weights file")
    return TorchvisionPersons(name, checkpoint, threshold, device)


def describe(detector: PersonDetector | None) -> dict[str, object] | None:
    """What an answer says about the boxes' source: ``{"name", "weights", "threshold"}``, ``None`` without one."""
    if detector is None:
        return None
    return {"name": detector.name, "weights": detector.weights, "threshold": detector.threshold}
