#!/usr/bin/env python3
"""AVA detection benchmark: keyframes per second end to end through TorchServe, and where the time goes.

The workload is real footage: OpenCV's pedestrian sample (people walking; from Debian's opencv-doc package),
10 s scaled to 720p (960x720, 10 fps, H.264). One TorchServe serves random-init archives (speed and memory only:
the answers mean nothing; the action head is scaled so that scores spread, for the bf16 agreement):

- ``--model`` (default slowfast_r50_detection) without a detector: requests give 1, 4 and 16 boxes;
- the same with OpenCV's HOG people detector, and with torchvision's Faster R-CNN (random weights set to call
  every anchor a person, so that it returns ``--detector-boxes`` boxes as a trained one would on a crowd);
- the same without a detector served eager, in fp32 and in bf16 (autocast): the default CPU engine's (OpenVINO
  fp32, checked at archive time) and bf16's scores against eager fp32's on the same boxes.

Each row sends ``--requests`` requests (one keyframe each, keyframes spread over the video), ``--concurrency`` at
a time, and reports keyframes/s, the per-request stage times the answers carry (the batch's forward divided by
the keyframes it scored), the detector's and the action model's shares, and the worker's peak resident memory.
Writes ``--report`` (Markdown) and a JSON beside it. Loopback only.

Example:
    .venv/bin/python -m bench.detection --requests 12 --concurrency 4 --report docs/bench-detection.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import requests
import torch

from bench.memory import PeakRss, worker_pid
from bench.workloads import machine, publish
from handler.detection import DETECTION_MODELS, build_detector_network
from handler.persons import build_torchvision_detector
from slowfast_serve.load.videos import pedestrians
from slowfast_serve.server.archive import DetectionBuild, ServingConfig, build_archive, parse_inference
from slowfast_serve.server.torchserve import TorchServe, free_port_overrides

VERSIONS = ("torch", "torchvision", "av", "pytorchvideo", "torchserve", "opencv-contrib-python-headless")
SECONDS = 10.0
HEIGHT = 720
STAGES = ("decode", "persons", "preprocess", "inference")


def action_checkpoint(model: str, path: Path, seed: int = 0) -> Path:
    """Random-init weights of ``model`` whose head is scaled x40 (random features give scores near 0.5
    otherwise), marked random-init."""
    torch.manual_seed(seed)
    network = build_detector_network(DETECTION_MODELS[model])
    with torch.no_grad():
        network.detection_head.proj.weight.mul_(40.0)
    torch.save({"model_state": network.state_dict(), "random_init": True}, path)
    return path


def crowd_rcnn(path: Path, label: int = 1) -> Path:
    """torchvision's Faster R-CNN, random, every anchor a box of COCO class ``label`` (1: person) scored 0.97:
    speed and plumbing only, marked random-init."""
    torch.manual_seed(0)
    network = build_torchvision_detector("fasterrcnn_resnet50_fpn")
    with torch.no_grad():
        for layer in (network.rpn.head.bbox_pred, network.roi_heads.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        classes = network.roi_heads.box_predictor.cls_score
        classes.weight.zero_()
        classes.bias.zero_()
        classes.bias[label] = 8.0  # softmax over 91 classes: about 0.97
    torch.save({"model_state": network.state_dict(), "random_init": True}, path)
    return path


def boxes(count: int, width: int = 960, height: int = 720) -> list[list[float]]:
    """``count`` person-sized boxes spread over the frame."""
    columns = 4
    return [
        [
            float(60 + (i % columns) * 220),
            float(80 + (i // columns) * 150),
            float(200 + (i % columns) * 220),
            float(400 + (i // columns) * 80),
        ]
        for i in range(count)
    ]


def engine_text(answer: dict) -> str:
    engine = answer["engine"]
    return f"{engine['name']} {engine['precision']}"


def drive(server: TorchServe, model: str, video: bytes, fields: dict, count: int, concurrency: int) -> dict:
    """``count`` requests (keyframes spread over the video), ``concurrency`` at a time; the worker's peak RSS."""
    token = server.token()

    def post(index: int) -> dict:
        keyframe = 0.5 + (SECONDS - 1.0) * index / max(count - 1, 1)
        response = requests.post(
            f"{server.inference_url}/predictions/{model}",
            files={"data": ("video.mp4", video, "video/mp4")},
            data={**fields, "keyframe_sec": f"{keyframe:.3f}", "top_k": "80"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=1800,
        )
        response.raise_for_status()
        return response.json()

    started = time.perf_counter()
    with PeakRss(worker_pid(server, model)) as memory, ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(post, range(count)))
    wall = time.perf_counter() - started
    per_request = {stage: sum(a["timing_ms"][stage] for a in answers) / count for stage in STAGES[:3]}
    # the forward is the batch's: each keyframe's share is the batch's time over the keyframes in it
    per_request["inference"] = sum(a["timing_ms"]["inference"] / a["batch_size"] for a in answers) / count
    total = sum(per_request.values())
    return {
        "requests": count,
        "engine": engine_text(answers[0]),
        "keyframes_per_s": round(count / wall, 3),
        "boxes_per_keyframe": round(sum(len(a["detections"]) for a in answers) / count, 1),
        "mean_batch": round(sum(a["batch_size"] for a in answers) / count, 2),
        "stage_ms": {k: round(v, 1) for k, v in per_request.items()},
        "detector_share": round(per_request["persons"] / total, 3),
        "action_share": round((per_request["preprocess"] + per_request["inference"]) / total, 3),
        "peak_mb": round(memory.peak_mb, 1),
        "answers": answers,
    }


def agreement(fp32: list[dict], other: list[dict]) -> dict:
    """Every (box, action) score of ``other`` against eager fp32's: the largest and the mean absolute difference,
    and the share within 0.01. (The top action is no measure here: the scaled random head saturates many scores
    near 1, so a rounding difference reorders ties.)"""
    differences = []
    for a, b in zip(fp32, other, strict=True):
        for d32, d in zip(a["detections"], b["detections"], strict=True):
            s32 = {x["class_id"]: x["score"] for x in d32["actions"]}
            differences += [abs(s32[x["class_id"]] - x["score"]) for x in d["actions"]]
    return {
        "scores": len(differences),
        "max_abs_score_diff": float(f"{max(differences):.3g}"),
        "mean_abs_score_diff": float(f"{sum(differences) / len(differences):.3g}"),
        "within_0.01": round(sum(d <= 0.01 for d in differences) / len(differences), 4),
    }


def run(args: argparse.Namespace) -> dict:
    staging = Path(tempfile.mkdtemp(prefix="bench-det-", dir="/tmp"))  # short: the workers' sockets live below
    try:
        video = pedestrians(staging, SECONDS, HEIGHT).read_bytes()
        store = staging / "store"
        checkpoint = action_checkpoint(args.model, staging / "action.pyth")
        serving = ServingConfig(
            batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay, response_timeout_s=1800
        )
        archives = {
            "given": DetectionBuild(),
            "hog": DetectionBuild(detector="hog", max_boxes=args.detector_boxes),
            "fasterrcnn_resnet50_fpn": DetectionBuild(
                detector="fasterrcnn_resnet50_fpn",
                detector_checkpoint=crowd_rcnn(staging / "rcnn.pth"),
                max_boxes=args.detector_boxes,
            ),
        }
        built = {
            name: build_archive(args.model, checkpoint, name=name, model_store=store, serving=serving, detection=build)
            for name, build in archives.items()
        }
        for name, option in (("eager", "export=eager"), ("bf16", "precision=bf16")):
            inference = parse_inference([option])
            built[name] = build_archive(
                args.model, checkpoint, name=name, model_store=store, serving=serving, inference=inference
            )
        server = TorchServe(staging / "run", store)
        server.start({name: path.name for name, path in built.items()}, overrides=free_port_overrides())
        rows, compared = [], {}
        try:
            for name in built:
                server.wait_ready(name, timeout=900)
            for count in args.boxes:
                fields = {"boxes": json.dumps(boxes(count))}
                row = {
                    "boxes": f"{count} given",
                    **drive(server, "given", video, fields, args.requests, args.concurrency),
                }
                rows.append(row)
                if count == args.compare_boxes:
                    eager = drive(server, "eager", video, fields, args.requests, args.concurrency)
                    bf16 = drive(server, "bf16", video, fields, args.requests, args.concurrency)
                    compared = {
                        "boxes": count,
                        "openvino": agreement(eager["answers"], row["answers"]),
                        "bf16": agreement(eager["answers"], bf16["answers"]),
                    }
                    rows += [{**eager, "boxes": f"{count} given"}, {**bf16, "boxes": f"{count} given"}]
            for name in ("hog", "fasterrcnn_resnet50_fpn"):
                rows.append(
                    {"boxes": f"found by {name}", **drive(server, name, video, {}, args.requests, args.concurrency)}
                )
            for row in rows:
                print(f"{row['boxes']}: {row['keyframes_per_s']} keyframes/s, {row['stage_ms']}", flush=True)
        finally:
            server.stop()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for row in rows:
        row.pop("answers")
    return {
        "model": args.model,
        "weights": "random-init, head scaled x40 (speed, memory and bf16 agreement only)",
        "workload": f"OpenCV's pedestrian sample (opencv-doc), first {SECONDS:g} s scaled to {HEIGHT}p, H.264 10 fps",
        "machine": machine(),
        "versions": {n: metadata.version(n) for n in VERSIONS},
        "serving": serving.as_yaml(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "results": rows,
        "bf16_agreement": compared,
    }


def markdown(report: dict, command: str) -> str:
    lines = [
        f"| {r['boxes']} | {r['engine']} | {r['boxes_per_keyframe']} | {r['keyframes_per_s']} | {r['mean_batch']} | "
        + " | ".join(str(r["stage_ms"][s]) for s in STAGES)
        + f" | {100 * r['detector_share']:.0f}% | {100 * r['action_share']:.0f}% | {r['peak_mb']:.0f} |"
        for r in report["results"]
    ]
    bf16 = report["bf16_agreement"]
    return "\n".join(
        [
            "# AVA detection benchmark",
            "",
            f"Generated by `{command}` (`make bench-detection`).",
            "",
            f"- Machine: {report['machine']}",
            f"- Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
            f"- Model: `{report['model']}`, {report['weights']}; on the CPU, each row's engine named",
            f"- Workload: {report['workload']}; {report['requests']} requests of one keyframe each, "
            f"{report['concurrency']} at a time; TorchServe batch size {report['serving']['batchSize']}, "
            f"max batch delay {report['serving']['maxBatchDelay']} ms, one worker per archive",
            "",
            "| boxes | engine | boxes per keyframe | keyframes/s | mean batch | decode (ms) | person detector (ms) | "
            "preprocess (ms) | forward (ms per keyframe) | detector share | action model share | "
            "peak worker RSS (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *lines,
            "",
            "Stage times are per request, as the answers report them (`timing_ms`), the batch's forward divided by "
            "the keyframes it scored; a keyframe's stages overlap with other requests' (the batch's requests are "
            "prepared in parallel), so keyframes/s is measured end to end, not derived from them. The shares are "
            "of the per-request sum: the detector's is the person detector, the action model's is its transform "
            "and forward (decoding is the rest). The Faster R-CNN has random weights set to call every anchor a "
            "person, so it returns its maximum of boxes as a trained one would on a crowd; HOG finds what it "
            "finds in the footage.",
            "",
            f"Agreement with eager fp32 on the same {bf16['boxes']} boxes of every request, all 80 action scores of "
            f"each box ({bf16['bf16']['scores']} scores in [0, 1]):",
            "",
            "| engine | largest difference | mean difference | within 0.01 |",
            "|---|---|---|---|",
            *(
                f"| {name} | {bf16[key]['max_abs_score_diff']} | {bf16[key]['mean_abs_score_diff']} | "
                f"{100 * bf16[key]['within_0.01']:.1f}% |"
                for name, key in (("openvino fp32 (the CPU default)", "openvino"), ("eager bf16 (autocast)", "bf16"))
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="slowfast_r50_detection", choices=sorted(DETECTION_MODELS))
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 4, 16], help="given boxes per keyframe")
    parser.add_argument("--compare-boxes", type=int, default=4, help="the given-box row bf16 is compared on")
    parser.add_argument("--detector-boxes", type=int, default=16, help="the detector archives' max_boxes")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-batch-delay", type=int, default=100)
    parser.add_argument("--report", type=Path, help="write the Markdown report here (and a JSON beside it)")
    args = parser.parse_args(argv)
    report = run(args)
    publish(
        report, markdown(report, shlex.join(["python", "-m", "bench.detection", *(argv or sys.argv[1:])])), args.report
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
