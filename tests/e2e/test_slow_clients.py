"""Slow and greedy clients against the running service (uvicorn with ``web.server``'s protocol):
a request head or body that does not arrive within its timeout costs the client its connection, a
long response (a dashboard stream) is never cut, and past ``http_max_connections`` the answer is 503."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.e2e._harness import config_with, running_service

LIMIT = 12


def config(tmp_path: Path) -> str:
    return config_with(tmp_path, http_header_timeout=1, http_body_timeout=1, http_max_connections=LIMIT)


def connect(port: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(sent)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (whatever it sends first is read)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_slow_heads_and_bodies_are_cut_long_answers_are_not(tmp_path: Path) -> None:
    with running_service(tmp_path, config=config(tmp_path)) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        head = connect(port, b"GET /api/v3/status HTTP/1.1\r\nHo")  # and then nothing more
        body = connect(port, b"POST /api/v3/vm HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        kept = connect(port, b"GET /api/v3/vm HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(10)
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /api/v3/vm HTTP/1.1\r\n")  # a second request's head, never finished
        stream = connect(port, b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_within(head, 5)
        assert closed_within(body, 5)
        assert closed_within(kept, 5)
        assert not closed_within(stream, 2.5)  # well past both timeouts: a response is never cut
        stream.close()


def test_past_the_connection_limit_the_answer_is_503(tmp_path: Path) -> None:
    with running_service(tmp_path, config=config(tmp_path)) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        socks = [
            connect(port, b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(LIMIT + 3)
        ]
        try:
            statuses = [sock.recv(64)[:12] for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    # connections and tasks both count towards the limit (uvicorn), so a few fewer may be served
    assert LIMIT - 3 <= statuses.count(b"HTTP/1.1 200") <= LIMIT, statuses
    assert statuses[-1] == b"HTTP/1.1 503", statuses
