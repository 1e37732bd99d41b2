"""``slowfast-serve web``: the page alone, against a running TorchServe; and the page ``make serve`` starts in
the background beside TorchServe (:class:`BackgroundPage`, stopped by ``make stop``)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slowfast_serve.client.keys import find_key_file
from slowfast_serve.client.options import KEY_FILE_HELP

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
#: What to do when the page's port of ``make serve`` is taken.
SERVE_REMEDY = (
    "choose another port (make serve WEB_PORT={port}, slowfast-serve serve --web-port {port}) or leave the page "
    "out (make serve WEB=0, slowfast-serve serve --no-web)"
)


class PageError(RuntimeError):
    """The page's server could not start, with what to do."""


FAILURES = (PageError,)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the page (default: %(default)s)")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: %(default)s, this machine only); any other needs --public",
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="allow a --host other than loopback: whoever reaches the port can then list the models and run "
        "predictions with this server's token, without one of their own (docs/web.md)",
    )
    parser.add_argument(
        "--inference-url", default="http://127.0.0.1:8080", help="TorchServe inference address (default: %(default)s)"
    )
    parser.add_argument(
        "--management-url",
        default="http://127.0.0.1:8081",
        help="TorchServe management address (default: %(default)s)",
    )
    parser.add_argument("--key-file", type=Path, help=KEY_FILE_HELP)
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds a prediction may take (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from slowfast_serve.web.proxy import WebSettings, create_app
    except ImportError as e:  # the client installed alone
        raise PageError(f"the page needs its web stack ({e}): pip install '.[web]' in a clone of the repository") from e

    loopback = _is_loopback(args.host)
    if not loopback and not args.public:
        raise PageError(
            f"--host {args.host} would let other machines use this TorchServe through the page, with its token; "
            "add --public if that is what you want (docs/web.md), or keep the default 127.0.0.1"
        )
    check_port(args.host, args.port)
    key_file = find_key_file(args.key_file)
    if key_file is None:
        print("no key_file.json found: calling TorchServe without a token (token authorization off?)", flush=True)
    settings = WebSettings(
        inference_url=args.inference_url,
        management_url=args.management_url,
        key_file=key_file.resolve() if key_file else None,
        timeout_s=args.timeout,
        allowed_hosts=LOOPBACK_HOSTS if loopback else ("*",),
    )
    print(f"The page: {page_url(args.host, args.port)} (TorchServe at {args.inference_url})", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def page_url(host: str, port: int) -> str:
    shown = DEFAULT_HOST if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{shown}]' if ':' in shown and not shown.startswith('[') else shown}:{port}/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int, remedy: str = "") -> None:
    """Raises :class:`PageError` when ``host:port`` cannot be listened on (another program has it); ``remedy``
    says how to choose another port (default: the ``web`` command's option)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as e:
            raise PageError(
                f"the page cannot listen on {host}:{port} ({e.strerror}); "
                + (remedy.format(port=port + 1) or f"choose another port, e.g. --port {port + 1}")
            ) from None


@dataclass
class BackgroundPage:
    """The page's server as a background process of a runtime directory (``run/``): ``web.pid``, ``logs/web.log``."""

    runtime_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "web.pid"

    @property
    def log_file(self) -> Path:
        return self.runtime_dir / "logs" / "web.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def url(self) -> str | None:
        try:
            return self.pid_file.read_text().split()[1]
        except (OSError, IndexError):
            return None

    def start(
        self,
        inference_url: str,
        management_url: str,
        key_file: Path | None,
        port: int = DEFAULT_PORT,
        wait_s: float = 30,
    ) -> str:
        """Starts ``slowfast-serve web`` on loopback ``port`` and waits until it answers; returns its URL."""
        check_port(DEFAULT_HOST, port, SERVE_REMEDY)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "slowfast_serve",
            "web",
            "--port",
            str(port),
            "--inference-url",
            inference_url,
            "--management-url",
            management_url,
        ]
        if key_file is not None:
            command += ["--key-file", str(key_file)]
        with open(self.log_file, "a") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        url = page_url(DEFAULT_HOST, port)
        self.pid_file.write_text(f"{process.pid} {url}\n")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise PageError(f"the page's server exited ({process.returncode}):\n{self._log_tail()}")
            if _answers(url + "healthz"):
                return url
            time.sleep(0.2)
        self.stop()
        raise PageError(f"the page's server did not answer within {wait_s:.0f} s:\n{self._log_tail()}")

    def stop(self, timeout: float = 10) -> bool:
        """Stops the page's server; returns whether one was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap it when this process started it
                os.waitpid(pid, os.WNOHANG)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        return True

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {self.log_file})"


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False
