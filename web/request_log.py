"""``:config: request_logger``: one log line per API request (method, route, status, milliseconds,
client). Unlike vmpooler's logger it never logs bodies, and it logs the route template rather than
the path, so neither a new token nor a token in a path (``/token/<token>``) reaches the log."""

from __future__ import annotations

import logging
import time

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from commands.settings import Settings
from web._paths import method_of, route_of

__all__ = ["RequestLogMiddleware", "request_logging"]

log = logging.getLogger("vmpooler.requests")


class RequestLogMiddleware(ASGIMiddleware):
    """Logs every HTTP request once its answer has started (``INFO``)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await next_app(scope, receive, sending)
        finally:
            client = scope.get("client")
            log.info(
                "%s %s %s %.1fms %s",
                method_of(scope),
                route_of(scope),
                status or 500,
                (time.perf_counter() - started) * 1000,
                client[0] if client else "-",
            )


def request_logging(settings: Settings) -> list[RequestLogMiddleware]:
    """The request logger: none unless ``:config: request_logger``."""
    return [RequestLogMiddleware()] if settings.config.request_logger else []
