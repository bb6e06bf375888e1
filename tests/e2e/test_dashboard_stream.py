"""The dashboard's event stream over real HTTP against the running service: a client that
reconnects with ``Last-Event-ID`` gets what it missed, and open streams do not keep the service
from stopping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import msgspec

from tests.e2e._harness import CONFIG, VMPOOLER, http, until
from vmpooler.redis_server import free_port


class SseClient:
    """A raw HTTP/1.1 SSE reader (no client library buffers or reconnects behind our back)."""

    def __init__(self, port: int, last_event_id: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        self.sock.sendall(f"GET /dashboard/events HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())
        self.buffer = b""

    def frame(self, within: float = 10.0) -> bytes:
        """The next frame that carries data (keep-alives and the retry hint skipped)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            while b"\n\n" in self.buffer:
                frame, self.buffer = self.buffer.split(b"\n\n", 1)
                if b"data: " in frame:
                    return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the stream ended")
            self.buffer += chunk
        raise AssertionError("no frame in time")

    def close(self) -> None:
        self.sock.close()


def decode(frame: bytes) -> tuple[str, dict[str, object]]:
    fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
    return fields.get(b"id", b"").decode(), msgspec.json.decode(fields[b"data"])


def test_resume_after_last_event_id_and_stop_with_open_streams(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen(
        [VMPOOLER, "--config", CONFIG, "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _ready(base) >= 2, what="debian-12 to have ready VMs")
        data = http("GET", f"{base}/dashboard/data")[1]
        cursor = data["cursor"]
        status, body = http("POST", f"{base}/api/v3/vm/debian-12")  # made while "disconnected"
        assert status == 200
        vm = body["debian-12"]["hostname"].split(".")[0]

        stream = SseClient(port, last_event_id=cursor)
        seen: list[tuple[str, str]] = []
        while ("vm.checked-out", vm) not in seen:
            event_id, message = decode(stream.frame())
            events = message["events"]
            assert isinstance(events, list)
            seen += [(e["type"], e["vm"]) for e in events]
            assert event_id == events[-1]["pos"]
        live = SseClient(port)  # a second, live-only stream stays open through the stop
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        stream.close()
        live.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _ready(base: str) -> int:
    try:
        return int(http("GET", f"{base}/api/v3/status?view=pools")[1]["pools"]["debian-12"]["ready"])
    except OSError:
        return 0
