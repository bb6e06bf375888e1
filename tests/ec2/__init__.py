"""Run moto's EC2 simulator as a real HTTP endpoint (``python -m moto.server``) for the EC2 provider's tests,
and a fault-injecting proxy in front of it.

:func:`start_moto` starts the server on a free loopback port with AMI validation on (so an unknown AMI is
refused as EC2 refuses it) and waits, with a deadline, until it answers. :class:`FaultProxy` forwards every
request to the server, except that it answers a chosen EC2 ``Action`` with a chosen EC2 error for the next
``n`` requests (``RequestLimitExceeded`` for throttling, ``InstanceLimitExceeded`` for a quota).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vmpooler.redis_server import free_port

__all__ = ["FaultProxy", "MotoServer", "free_port", "moto_or_skip", "start_moto"]

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def moto_or_skip() -> None:
    """Skip the calling test module, saying why, when boto3 or moto's server extra is missing."""
    for module, extra in (("boto3", "boto3"), ("moto", "moto[server]"), ("flask", "moto[server]")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install '{extra}'; `make test` installs .[test])")


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget every instance, volume and snapshot (moto keeps terminated instances, and its lookups
        slow down as they pile up)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request("POST", "/moto-api/reset")
        connection.getresponse().read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/moto-api/")
        connection.getresponse().read()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def start_moto(port: int = 0) -> Iterator[MotoServer]:
    """Run moto's server on ``127.0.0.1:port`` (0: a free port); stop it on exit.

    Raises:
        RuntimeError: when it does not answer within 30 s.
    """
    port = port or free_port()
    env = {**os.environ, "MOTO_ENABLE_AMI_VALIDATION": "true"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MotoServer(port, process)
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start on port {port} (exit code {process.poll()})")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
)


class FaultProxy:
    """An HTTP proxy to ``target`` that answers some EC2 actions with errors (see :meth:`inject`).

    ``requests`` counts what reached the proxy, by ``Action``.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.faults: dict[str, list[tuple[str, int]]] = {}
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, action: str, code: str, n: int, status: int = 400) -> None:
        """Answer the next ``n`` requests of ``action`` (e.g. ``RunInstances``) with the error ``code``."""
        with self._lock:
            self.faults.setdefault(action, []).extend([(code, status)] * n)

    def _fault(self, action: str) -> tuple[str, int] | None:
        with self._lock:
            self.requests[action] = self.requests.get(action, 0) + 1
            queued = self.faults.get(action)
            return queued.pop(0) if queued else None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = urllib.parse.parse_qs(body.decode()).get("Action", [""])[0]
                fault = proxy._fault(action)
                if fault is not None:
                    code, status = fault
                    self._answer(status, _ERROR.format(code=code, message=f"injected {code}").encode())
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request("POST", self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                self._answer(reply.status, reply.read(), reply.getheader("Content-Type") or "text/xml")

            def _answer(self, status: int, payload: bytes, kind: str = "text/xml") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
