"""What the end-to-end tests share: the service started as the README says (``vmpooler --config
examples/vmpooler.yaml``: embedded Redis, simulated provider), a small HTTP client, polling with a
deadline, and how Chromium is launched here (also used by ``bench/dashboard.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vmpooler.redis_server import free_port

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "CONFIG", "ROOT", "VMPOOLER", "http", "running_service", "until"]

ROOT = Path(__file__).resolve().parents[2]
VMPOOLER = str(Path(sys.executable).parent / "vmpooler")
CONFIG = str(ROOT / "examples" / "vmpooler.yaml")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    # root in a container has no sandbox; the rest keep Chromium off a network it cannot reach
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def config_with(workdir: Path, **config: object) -> str:
    """A copy of the example config in ``workdir`` with these ``:config:`` keys added; its path."""
    added = "".join(f"  {key}: {value}\n" for key, value in config.items())
    path = workdir / "config.yaml"
    path.write_text(Path(CONFIG).read_text().replace(":config:\n", f":config:\n{added}", 1))
    return str(path)


@contextlib.contextmanager
def running_service(
    workdir: Path, *, config: str = CONFIG, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``vmpooler --config <config>`` in ``workdir`` (its log in ``service.log`` there), once it
    answers ``/healthcheck``; stopped with SIGTERM on exit. Yields its base URL and process."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
    log = (workdir / "service.log").open("wb")
    proc = subprocess.Popen(
        [VMPOOLER, "--config", config, "--port", str(port)], cwd=workdir, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return http("GET", f"{base}/healthcheck")[0] == 200
        except OSError:
            return False

    try:
        until(healthy, what="the service to answer /healthcheck")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        log.close()
