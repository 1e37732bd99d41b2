"""``slowfast-serve``: the project's one command line (``slowfast-serve --help``, ``slowfast-serve COMMAND --help``).

Each subcommand lives in the module that does the work, as two functions: one that adds its options to an
argparse parser and one that runs it. Only the chosen subcommand's module is imported, so the client's
commands run where only the client is installed (no torch), and ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class UsageError(ValueError):
    """Arguments that do not fit together: reported like argparse's own errors (exit status 2)."""


@dataclass(frozen=True)
class Command:
    """A subcommand: the module holding it, the names of its configure and run functions, what it is for and
    examples of it."""

    module: str
    configure: str
    run: str
    help: str
    examples: tuple[str, ...]
    server: bool = False  # needs the server stack (torch, TorchServe), not only the client


def _client(module: str, help: str, *examples: str, run: str = "run", configure: str = "configure") -> Command:
    return Command(f"slowfast_serve.client.{module}", configure, run, help, examples)


def _server(module: str, help: str, *examples: str, run: str = "run", configure: str = "configure") -> Command:
    return Command(f"slowfast_serve.{module}", configure, run, help, examples, server=True)


COMMANDS: dict[str, Command] = {
    "serve": _server(
        "server.instance",
        "build the archive if needed, start TorchServe, wait until the model is ready (make serve)",
        "slowfast-serve serve --model motion_demo",
        "slowfast-serve serve --model slowfast_r50 --checkpoint SLOWFAST_8x8_R50.pyth --inference precision=bf16",
        "slowfast-serve serve --model slow_r50 --random-init   # plumbing only: meaningless predictions",
        run="run_serve",
        configure="configure_serve",
    ),
    "stop": _server("server.instance", "stop the local TorchServe (make stop)", "slowfast-serve stop", run="run_stop"),
    "status": _server(
        "server.instance",
        "is the local TorchServe running, and where?",
        "slowfast-serve status",
        run="run_status",
    ),
    "token": _server(
        "server.instance",
        "issue a new inference token (TorchServe's expire after 60 minutes)",
        "slowfast-serve token",
        run="run_token",
    ),
    "archive": _server(
        "server.archive",
        "build model_store/<name>.mar for a registry model (make archive)",
        "slowfast-serve archive --model motion_demo",
        "slowfast-serve archive --model slowfast_r50 --checkpoint SLOWFAST_8x8_R50.pyth --inference export=torchscript",
        "slowfast-serve archive --model mmaction2_slowfast_r50_8x8 "
        "--checkpoint slowfast_r50_8x8x1_256e_kinetics400_rgb_20200716-73547d2b.pth",
    ),
    "download": _server(
        "server.weights",
        "download a registry model's official checkpoint into torch.hub's cache (make download)",
        "slowfast-serve download slowfast_r50",
    ),
    "convert": _server(
        "server.convert",
        "convert a toolbox's checkpoint (MMAction2, PaddleVideo, PySlowFast) to this project's format",
        "slowfast-serve convert slowfast_r50_8x8x1_256e_kinetics400_rgb_20200716-73547d2b.pth "
        "--model mmaction2_slowfast_r50_8x8 --out mmaction2_slowfast_r50_8x8.pyth",
        "slowfast-serve convert 'SlowFast_8*8.pdparams' --describe",
    ),
    "export": _server(
        "server.export",
        "export a model to TorchScript, AOTInductor or OpenVINO and check it against eager",
        "slowfast-serve export --model x3d_s --random-init --format torchscript --output build/x3d_s.ts.pt",
        "slowfast-serve export --model motion_demo --checkpoint models/motion_demo/motion_demo.pyth --format openvino "
        "--precision int8 --calibration videos/ --output build/motion_demo-int8.ov.zip",
    ),
    "kserve": _server(
        "server.kserve",
        "lay out built archives as KServe's TorchServe runtime reads a storageUri",
        "slowfast-serve kserve motion_demo --output build/kserve/motion_demo",
    ),
    "gateway": Command(
        "slowfast_serve.web.gateway",
        "configure",
        "run",
        "a KServe pod's main process: TorchServe from a kserve layout, token authorization on, behind a gateway",
        (
            "slowfast-serve gateway --token-file /var/run/secrets/slowfast-serve/token   # deploy/kserve/runtime.yaml",
            "slowfast-serve gateway --layout build/kserve/motion_demo --port 8093 --token-file token.txt",
        ),
        server=True,
    ),
    "classify": _client(
        "classify",
        "classify videos, or folders of videos, with a running server (HTTP or gRPC)",
        "slowfast-serve classify clip.mp4 --model motion_demo",
        "slowfast-serve classify a.mp4 b.webm --top-k 3 --start-sec 2.5 --views 10x3 --json",
        "slowfast-serve classify clip.mp4 --grpc --grpc-address 127.0.0.1:7070",
        "slowfast-serve classify videos/ --output results.jsonl --concurrency 4   # resumable",
    ),
    "timeline": _client(
        "timeline",
        "label a long video window by window: intervals, a PNG plot, an annotated copy",
        "slowfast-serve timeline match.mp4 --stride-sec 1 --plot match.png --annotate match-labelled.mp4",
        "slowfast-serve timeline match.mp4 --model motion_demo --json",
    ),
    "detect": _client(
        "detect",
        "who does what: AVA actions per person box, at a keyframe or every few seconds (AVA detection models)",
        "slowfast-serve detect clip.mp4 --model slowfast_r50_detection --boxes '[[10, 20, 200, 400]]'",
        "slowfast-serve detect match.mp4 --model slowfast_r50_detection --every 1 --annotate match-actions.mp4",
        "slowfast-serve detect clip.mp4 --model slow_r50_detection --keyframe-sec 2.5 --top-k 3 --json",
    ),
    "stream": _client(
        "stream",
        "classify a webcam, an RTSP/HTTP stream or a file played as one",
        "slowfast-serve stream /dev/video0 --every 1 --show",
        "slowfast-serve stream rtsp://camera.local/stream --every 2 --output labelled.mp4",
        "slowfast-serve stream recording.mp4 --model motion_demo --json",
    ),
    "web": Command(
        "slowfast_serve.web.command",
        "configure",
        "run",
        "the web page alone, against a running TorchServe (make serve starts it too)",
        (
            "slowfast-serve web",
            "slowfast-serve web --port 8091 --inference-url http://10.0.0.5:8080 --management-url "
            "http://10.0.0.5:8081 --key-file key_file.json",
        ),
    ),
    "models": _client(
        "management",
        "describe the served models: versions, workers, batching (make models)",
        "slowfast-serve models",
        "slowfast-serve models motion_demo --json",
        run="run_models",
        configure="configure_models",
    ),
    "scale": _client(
        "management",
        "set a model's worker count and wait until the workers are up (make scale)",
        "slowfast-serve scale motion_demo --workers 2",
        run="run_scale",
        configure="configure_scale",
    ),
    "register": _client(
        "management",
        "register an archive of the model store (needs the model API: make serve MODEL_API=1)",
        "slowfast-serve register motion_demo.mar --name demo2 --workers 1",
        run="run_register",
        configure="configure_register",
    ),
    "unregister": _client(
        "management",
        "unregister a model (needs the model API: make serve MODEL_API=1)",
        "slowfast-serve unregister demo2",
        run="run_unregister",
        configure="configure_unregister",
    ),
    "finetune": _server(
        "training.finetune",
        "train or fine-tune a registry architecture on a folder of class folders of videos",
        "slowfast-serve finetune data/mine --model slowfast_r50 --init SLOWFAST_8x8_R50.pyth --hflip all "
        "--out runs/mine",
    ),
    "motion-data": _server(
        "training.motion_data",
        "write the synthetic motion dataset the demo model is trained on",
        "slowfast-serve motion-data data/motion/val --per-class 4 --seed 1",
    ),
    "drawn-motion": _server(
        "evaluation.drawn_motion",
        "write clips of the independent motion generator (evaluation only: never trained on)",
        "slowfast-serve drawn-motion /tmp/drawn --per-class 2 --seed 3",
    ),
    "soak": _server(
        "load.soak",
        "load a local server for minutes: errors, latency, worker memory growth",
        "slowfast-serve soak --model motion_demo --minutes 5 --concurrency 4 --report docs/soak.md",
    ),
}

SERVER_HINT = (
    "this command needs the server stack (torch, PyAV, TorchServe) of a checkout: "
    "run `scripts/install.sh --venv .venv` there and use .venv/bin/slowfast-serve"
)


def _parser(chosen: str | None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser; only the ``chosen`` subcommand gets its options (its module is imported)."""
    parser = argparse.ArgumentParser(
        prog="slowfast-serve",
        description="Serve SlowFast-family video classifiers with TorchServe, and call them.",
        epilog="`slowfast-serve COMMAND --help` shows a command's options and examples.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {}
    for name, command in COMMANDS.items():
        examples = "\n".join(f"  {example}" for example in command.examples)
        subparsers[name] = commands.add_parser(
            name,
            help=command.help,
            description=command.help[0].upper() + command.help[1:] + ".",
            epilog=f"example{'s' if len(command.examples) > 1 else ''}:\n{examples}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    if chosen in COMMANDS:
        command = COMMANDS[chosen]
        module = importlib.import_module(command.module)
        configure: Callable[[argparse.ArgumentParser], None] = getattr(module, command.configure)
        configure(subparsers[chosen])
        subparsers[chosen].set_defaults(_run=getattr(module, command.run), _failures=_failures(module))
    return parser, subparsers


def _failures(module: object) -> tuple[type[BaseException], ...]:
    """What a command reports as ``error: ...`` (exit status 1) instead of a traceback: the client's
    ServiceError, and what the module names as expected failures (``FAILURES``)."""
    from slowfast_serve.client.errors import ServiceError

    return (ServiceError, *getattr(module, "FAILURES", ()))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in arguments if not a.startswith("-")), None)
    try:
        parser, subparsers = _parser(chosen)
    except ImportError as e:
        if chosen in COMMANDS and COMMANDS[chosen].server:
            print(f"slowfast-serve {chosen}: {SERVER_HINT} ({e})", file=sys.stderr)
            return 1
        raise
    except RuntimeError as e:  # a server command outside a checkout (slowfast_serve.checkout)
        print(f"slowfast-serve {chosen}: {e}", file=sys.stderr)
        return 1
    args = parser.parse_args(arguments)
    try:
        return int(args._run(args) or 0)
    except UsageError as e:
        subparsers[args.command].error(str(e))
    except args._failures as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
