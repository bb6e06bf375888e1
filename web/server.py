"""How the API is served: uvicorn's options, with read timeouts uvicorn lacks.

uvicorn closes an idle keep-alive connection, but a client that sends one header byte a second holds
its connection (and a file descriptor) forever. :class:`GuardedProtocol` adds two deadlines to
uvicorn's httptools protocol: the request line and headers must arrive within ``http_header_timeout``
seconds of the connection's start or of the previous response, and the body within
``http_body_timeout`` seconds of the headers; a client that misses one is disconnected. A response,
however long (the dashboard's event streams), is never cut. ``http_max_connections`` bounds the open
connections (uvicorn's ``limit_concurrency``: 503 beyond it).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from commands.settings import Settings

__all__ = ["GuardedProtocol", "uvicorn_options"]


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with header and body read deadlines (class attributes, set per
    server by :func:`uvicorn_options`)."""

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.header_timeout)  # the next request's head, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` from ``:config:`` (``http_header_timeout``,
    ``http_body_timeout``, ``http_max_connections``)."""
    config = settings.config
    protocol = type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {"header_timeout": config.http_header_timeout, "body_timeout": config.http_body_timeout},
    )
    return {"http": protocol, "limit_concurrency": config.http_max_connections}
