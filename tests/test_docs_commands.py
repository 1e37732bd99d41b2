"""Every shell command in README.md and docs/*.md runs as written.

Each command of a ``bash`` block is classified by what it calls. Commands that can run here run for real, block
by block in one shell (so ``TOKEN=$(...)`` reaches the ``curl`` after it), as a user types them after
``source .venv/bin/activate``: against a real TorchServe on the documented default ports serving the bundled
``motion_demo`` (also under the name ``slowfast_r50``, the client's default model), in a folder holding the
videos the commands name. The rest are resolved: ``slowfast-serve`` arguments parse with the real parser,
``make`` targets dry-run, files they name exist, and external tools (docker, kubectl, gsutil, a webcam, a
download) are ones this test knows; a command of any other kind fails the test until it is classified here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from handler.pipeline import InferenceOptions
from slowfast_serve import cli
from slowfast_serve.server.torchserve import TorchServe, read_properties
from slowfast_serve.training.motion_data import make_video
from tests import REPO
from tests.serving import copy_archive

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
SERVED = ("motion_demo", "slowfast_r50", "slow_r50_detection")  # the first two serve the demo archive
DETECTION = "slow_r50_detection"  # random-init, with the HOG people detector
#: Subcommands that run here when their models are served and their files exist.
RUNNABLE = {
    "classify",
    "detect",
    "timeline",
    "models",
    "scale",
    "register",
    "unregister",
    "kserve",
    "export",
    "motion-data",
    "drawn-motion",
}
#: Tools outside this project that the docs use where CI cannot (no Docker engine, no cluster, no cloud).
EXTERNAL = {"docker", "kubectl", "gsutil"}
#: Variables set by tests/test_api_docs.py, which runs those examples.
API_DOCS_VARIABLES = ("$URL", "$KEYS", "$VIDEO", "$MODEL", "$GRPC")


@dataclass(frozen=True)
class Command:
    doc: str
    block: int
    text: str

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text.split("<<")[0], comments=True)

    @property
    def program(self) -> str:
        """The executable, past leading ``NAME=value`` assignments (``TOKEN=$(...)`` is a shell assignment)."""
        if re.match(r"[A-Z_]+=\$\(", self.text):
            return "assignment"
        words = self.words
        while len(words) > 1 and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]
        return "assignment" if re.fullmatch(r"[A-Z_]+=.*", words[0]) else words[0]


def _commands() -> list[Command]:
    found = []
    for doc in DOCS:
        blocks = re.findall(r"^```(bash|sh)\n(.*?)^```", doc.read_text(), flags=re.M | re.S)
        for index, (_, code) in enumerate(blocks):
            lines = re.sub(r"\\\n\s*", " ", code).splitlines()
            while lines:
                line = lines.pop(0)
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                heredoc = re.search(r"<<'?(\w+)'?", line)
                if heredoc:  # the heredoc's body belongs to its command
                    end = lines.index(heredoc.group(1))
                    line = "\n".join([line, *lines[: end + 1]])
                    del lines[: end + 1]
                found.append(Command(doc.relative_to(REPO).as_posix(), index, line.strip()))
    return found


COMMANDS = _commands()


def _model_values(words: list[str]) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--model"]


def runs_here(command: Command) -> bool:
    """Whether the command runs for real in this test (else it is only resolved)."""
    if any(variable in command.text for variable in API_DOCS_VARIABLES):
        return False  # tests/test_api_docs.py runs it with its variables
    words = command.words
    if command.program in ("assignment", "curl", "python3", "ls"):
        return "SERVICE_URL" not in command.text and "key_file.json" not in command.text.split("open(")[0]
    if command.program != "slowfast-serve" or len(words) < 2 or words[1] not in RUNNABLE:
        return False
    files = [w for w in words if re.search(r"\.(pyth|pth|pkl|pdparams)$", w)]
    if any(not (REPO / f).is_file() for f in files):
        return False  # a checkpoint the user downloads
    if words[1] in ("kserve", "register") and not all(w.startswith(("motion_demo", "-")) for w in words[2:3]):
        return False
    if words[1] == "scale" and words[2] not in SERVED:
        return False
    return all(model in SERVED for model in _model_values(words))


def test_the_docs_have_commands_of_every_kind() -> None:
    ran = [c for c in COMMANDS if runs_here(c)]
    subcommands = {c.words[1] for c in ran if c.program == "slowfast-serve"}
    assert {"classify", "detect", "timeline", "models", "register", "kserve", "export", "motion-data"} <= subcommands
    assert any(c.program == "curl" for c in ran)
    assert any("--grpc" in c.words for c in ran)
    assert any("--annotate" in c.words and "--plot" in c.words for c in ran)
    assert any(c.words[1:2] == ["classify"] and "--output" in c.words for c in ran)  # folder mode


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.doc}:{c.block}:{c.text[:50]}" for c in COMMANDS])
def test_command_resolves(command: Command) -> None:
    """The executable exists and the arguments are ones it accepts."""
    words, program = command.words, command.program
    if program == "slowfast-serve":
        parser, _ = cli._parser(words[1])
        parser.parse_args(words[1:])  # exits (SystemExit) on an unknown subcommand, option or choice
    elif program == "make":
        assignments = [w for w in words[1:] if "=" in w]
        targets = [w for w in words[1:] if "=" not in w]
        result = subprocess.run(["make", "-n", *targets, *assignments], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    elif program == "source":
        assert (REPO / words[1]).is_file() or words[1] == ".venv/bin/activate"
    elif program in ("pip", "curl", "python3", "test", "ls", "assignment"):
        assert shutil.which(program) or program == "assignment"
        if program == "pip":  # tests/test_client_install.py and tests/test_server_install.py install them so
            assert words[1:] in (
                ["install", ".[client]"],
                ["install", "-r", "requirements.txt"],
                ["install", "--no-deps", "."],
            )
    elif program == "bash":  # a script of this repository: it exists and parses
        assert (REPO / words[1]).is_file(), words[1]
        assert subprocess.run(["bash", "-n", str(REPO / words[1])], capture_output=True).returncode == 0
    elif program == ".venv/bin/python":
        assert Path(sys.executable).parent.joinpath("python").exists()
    elif program in EXTERNAL:
        for flag, path in zip(words, words[1:], strict=False):
            if flag == "-f":
                assert (REPO / path).is_file(), path
        if words[1:2] == ["build"]:
            assert (REPO / "Dockerfile").is_file()
    else:
        pytest.fail(f"{command.doc}: unclassified command {command.text!r}: teach tests/test_docs_commands.py it")


def _ports_free() -> bool:
    ports = [int(address.rsplit(":", 1)[1]) for address in _default_addresses()]
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def _default_addresses() -> list[str]:
    properties = read_properties(REPO / "config.properties")
    return [
        properties["inference_address"],
        properties["management_address"],
        properties["metrics_address"],
        f"127.0.0.1:{properties.get('grpc_inference_port', 7070)}",
        f"127.0.0.1:{properties.get('grpc_management_port', 7071)}",
    ]


@pytest.fixture(scope="module")
def docs_server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """motion_demo served as motion_demo and slowfast_r50 on the default ports, the model API on; its archive
    also in the checkout's model_store/ (as `make archive MODEL=motion_demo` leaves it, for the kserve example).
    Beside them, slow_r50_detection with random weights and the HOG people detector (docs/detection.md; eager:
    which engine serves it changes no command)."""
    from slowfast_serve.server.archive import DEFAULT_STORE, DetectionBuild, build_archive

    if not _ports_free():
        pytest.skip("the documented commands use the default ports, which are in use here (make stop first)")
    copy_archive(demo_archive, DEFAULT_STORE)  # model_store/motion_demo.mar, with its build record
    store = tmp_path_factory.mktemp("store")
    copy_archive(demo_archive, store)
    copy_archive(demo_archive, store, "slowfast_r50")
    eager = InferenceOptions(export="eager")
    build_archive(DETECTION, None, model_store=store, inference=eager, detection=DetectionBuild(detector="hog"))
    server = TorchServe(tmp_path_factory.mktemp("ts"), store)
    server.start({name: f"{name}.mar" for name in SERVED}, overrides={"enable_model_api": "true"})
    try:
        for name in SERVED:
            server.wait_ready(name, timeout=300)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, docs_server: TorchServe) -> Path:
    """The folder the commands run in: the videos they name, run/key_file.json, the checkout's models/."""
    root = tmp_path_factory.mktemp("user")
    names = [
        ("clip.mp4", "moving up"),
        ("a.mp4", "moving left"),
        ("match.mp4", "growing"),
        ("recording.mp4", "moving right"),
    ]
    for name, motion in names:
        (root / name).write_bytes(make_video(motion, 77, len(name), encoding=0)[0])
    (root / "b.webm").write_bytes(make_video("shrinking", 78, 0, encoding=3)[0])
    (root / "videos").mkdir()
    for i, motion in enumerate(["moving right", "rotating clockwise"]):
        (root / "videos" / f"v{i}.mp4").write_bytes(make_video(motion, 79, i, encoding=0)[0])
    (root / "run").mkdir()
    (root / "run" / "key_file.json").symlink_to(docs_server.key_file)
    (root / "models").symlink_to(REPO / "models")
    return root


BLOCKS = sorted({(c.doc, c.block) for c in COMMANDS if runs_here(c)})


@pytest.mark.integration
@pytest.mark.parametrize(("doc", "block"), BLOCKS, ids=[f"{doc}:{block}" for doc, block in BLOCKS])
def test_block_runs_as_written(doc: str, block: int, docs_server: TorchServe, workdir: Path) -> None:
    script = "\n".join(c.text for c in COMMANDS if (c.doc, c.block) == (doc, block) and runs_here(c))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # source .venv/bin/activate
        "TS_KEY_FILE": str(docs_server.key_file),
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    report = f"{script}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 0, report
    assert not re.search(r'"code": [45]\d\d', result.stdout), report  # curl exits 0 on an HTTP error: read it
