"""A flood of dashboard streams against the running service: 1,000 clients on
``/dashboard/events?since=0-0`` are served (backlog reads bounded, the dashboard on its own Redis
connections), one more is told 503 with ``Retry-After``, and ``/api/v3/status`` keeps answering:
p99 under 1 s (a generous functional bound, not a speed target: bench/ has those)."""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path

from tests.e2e._harness import config_with, http, running_service

STREAMS = 1000


def open_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /dashboard/events?since=0-0 HTTP/1.1\r\nHost: flood\r\n\r\n")
    return sock


def heads(socks: list[socket.socket], within: float = 60.0) -> list[bytes]:
    """Each socket's first bytes (its status line), read as they come."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    got: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + within
    while len(got) < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            got[sock] = sock.recv(4096)
            selector.unregister(sock)
    selector.close()
    return [got.get(sock, b"") for sock in socks]


def test_a_thousand_streams_leave_the_api_answering(tmp_path: Path) -> None:
    with running_service(
        tmp_path,
        config=config_with(tmp_path, dashboard_max_streams=STREAMS, http_max_connections=STREAMS + 200),
    ) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        socks = [open_stream(port) for _ in range(STREAMS)]
        try:
            answers = heads(socks)
            assert sum(a.startswith(b"HTTP/1.1 200") for a in answers) == STREAMS
            one_more = open_stream(port)
            refused = heads([one_more])[0]
            one_more.close()
            assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
            assert b"retry-after: 10" in refused.lower()
            latencies = []
            for _ in range(100):
                started = time.monotonic()
                status, _ = http("GET", f"{base}/api/v3/status")
                latencies.append(time.monotonic() - started)
                assert status == 200
            latencies.sort()
            assert latencies[98] < 1.0, latencies[-5:]
        finally:
            for sock in socks:
                sock.close()
        log = (tmp_path / "service.log").read_text()
        assert "No connection available" not in log
