"""The Prometheus endpoint and HTTP metrics (reference §1.5), when ``:prometheus:`` is the sink.

Families, in the process's registry (``ApiDeps.prometheus_registry``; never the global one):
``<prometheus_prefix>_http_requests_total{code,method,path}``,
``<prometheus_prefix>_http_request_duration_seconds{method,path}`` (histogram) and
``<prometheus_prefix>_http_exceptions_total{exception}`` (exceptions that became a 500), each with
``vmpooler_instance``. The ``path`` label is the route template the request matched, normalised as
vmpooler normalises paths (whatever follows ``/vm/``, ``/ondemandvm/``, ``/token/``, ``/lib/`` or
``/img/`` is dropped), and ``<unmatched>`` for every path that matched no route; ``method`` is
``OTHER`` for a method HTTP does not define. So no client can add a label value: the series are
bounded by the routes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from commands.settings import PrometheusSettings

from ._deps import ApiDeps, services_of
from ._paths import UNMATCHED, method_of, route_of

__all__ = ["PrometheusParts", "normalise_path", "prometheus_parts"]

_COLLAPSE = re.compile(r"/(vm|ondemandvm|token|lib|img)/.+$")
_EXCEPTION_KEY = "vmpooler.exception"


def normalise_path(path: str) -> str:
    """``path`` with everything after ``/vm/``, ``/ondemandvm/``, ``/token/``, ``/lib/`` or ``/img/``
    removed (``/api/v3/vm/abc/disk/2`` -> ``/api/v3/vm``)."""
    return _COLLAPSE.sub(r"/\1", path)


@dataclass(frozen=True, slots=True)
class PrometheusParts:
    """What ``create_app`` adds to the application; all empty unless Prometheus is the sink."""

    routes: list[HTTPRouteHandler] = field(default_factory=list)
    middleware: list[Callable[[ASGIApp], ASGIApp]] = field(default_factory=list)
    after_exception: list[Callable[[Exception, Scope], Any]] = field(default_factory=list)
    before_send: list[Callable[[Message, Scope], Any]] = field(default_factory=list)


class _HttpMetrics:
    def __init__(self, settings: PrometheusSettings, registry: CollectorRegistry) -> None:
        prefix = settings.prometheus_prefix
        self.instance = settings.prefix
        self.requests = Counter(
            f"{prefix}_http_requests_total",
            "HTTP requests by status code, method and path",
            ["vmpooler_instance", "code", "method", "path"],
            registry=registry,
        )
        self.durations = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "HTTP request duration by method and path",
            ["vmpooler_instance", "method", "path"],
            registry=registry,
        )
        self.exceptions = Counter(
            f"{prefix}_http_exceptions_total",
            "Exceptions that turned a request into a 500",
            ["vmpooler_instance", "exception"],
            registry=registry,
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            status = 500

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            started = time.perf_counter()
            try:
                await app(scope, receive, capture)
            except Exception as exc:
                self._record(scope, type(exc).__name__)
                raise
            finally:
                self.observe(scope, status, time.perf_counter() - started)

        return measured

    async def after_exception(self, exc: Exception, scope: Scope) -> None:
        """Litestar's hook, called for every exception a handler raised (mapped or not)."""
        self._record(scope, type(exc).__name__)

    async def unmatched(self, message: Message, scope: Scope) -> None:
        """Litestar's ``before_send`` hook: counts answers to requests that matched no route (they
        never reach the middleware), all under one ``path`` label."""
        if message["type"] == "http.response.start" and route_of(scope) == UNMATCHED:
            self.requests.labels(self.instance, str(message["status"]), method_of(scope), UNMATCHED).inc()

    def _record(self, scope: Scope, name: str) -> None:
        cast(dict[str, Any], scope)[_EXCEPTION_KEY] = name

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        method, path = method_of(scope), normalise_path(route_of(scope))
        self.requests.labels(self.instance, str(status), method, path).inc()
        self.durations.labels(self.instance, method, path).observe(seconds)
        exception = cast(dict[str, Any], scope).get(_EXCEPTION_KEY)
        if status >= 500 and exception and status != 503:  # 503 is "no capacity", not a fault
            self.exceptions.labels(self.instance, exception).inc()


async def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The process's registry in Prometheus's text format (mounted at ``prometheus_endpoint``)."""
    registry = services_of(request).deps.prometheus_registry
    content = generate_latest(registry) if registry is not None else b""
    return Response(content=content, media_type=CONTENT_TYPE_LATEST)


def prometheus_parts(deps: ApiDeps) -> PrometheusParts:
    """The endpoint, middleware and exception hook, if Prometheus is the configured sink."""
    settings, registry = deps.settings.prometheus, deps.prometheus_registry
    if deps.settings.metrics_backend != "prometheus" or settings is None or registry is None:
        return PrometheusParts()
    http = _HttpMetrics(settings, registry)
    route = get(settings.prometheus_endpoint, include_in_schema=False)(scrape)
    return PrometheusParts([route], [http.middleware], [http.after_exception], [http.unmatched])
