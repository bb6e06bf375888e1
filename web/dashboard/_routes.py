"""Dashboard routes. Everything reads projections (the feed and a VM's history read the log).

Handlers are module-level; each app's :class:`Dashboard` (its snapshots, live hub, audit reader and
static files) reaches them by dependency injection (``dashboard: Dashboard``)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import msgspec
from litestar import Request, Response, get
from litestar.enums import MediaType
from litestar.params import FromPath
from litestar.response import Stream

from projectors.audit import AuditLog
from projectors.read import ReadModels
from web._deps import Services
from web._json import json_response

from ._data import Snapshots, major
from ._live import Hub, sse_stream

__all__ = ["DASHBOARD_ROUTES", "Dashboard"]

_encoder = msgspec.json.Encoder()
_POSITION = re.compile(r"^\d{1,20}-\d{1,20}$")
# Litestar adds "; charset=utf-8" to text/* media types itself.
_TYPES = {".js": "text/javascript", ".css": "text/css"}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
SECURITY_HEADERS = {
    # the page loads only its own script, styles and data; the script sets inline style attributes
    # (chart legends), hence 'unsafe-inline' for styles only; nothing may frame it
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    **NOSNIFF,
}
_STATIC_HEADERS = {"Cache-Control": "no-cache", **SECURITY_HEADERS}
_RETRY_AFTER = "10"


def _assets(title: str) -> dict[str, tuple[bytes, str]]:
    """The page and its static files, read once from the package (name -> (bytes, content type))."""
    root = resources.files("web.dashboard") / "static"
    out: dict[str, tuple[bytes, str]] = {}
    for item in root.iterdir():
        suffix = item.name[item.name.rfind(".") :]
        if suffix in _TYPES:
            out[item.name] = (item.read_bytes(), _TYPES[suffix])
    page = (root / "index.html").read_text().replace("{{title}}", html.escape(title))
    out["index.html"] = (page.encode(), "text/html")
    return out


def _compact(body: Any) -> Response[bytes]:
    return Response(
        content=_encoder.encode(body),
        media_type=MediaType.JSON,
        headers={"Cache-Control": "no-store", **NOSNIFF},
    )


def _flag(request: Request[Any, Any, Any], name: str) -> bool:
    value = request.query_params.get(name)
    return value is not None and value.lower() not in ("0", "false", "no")


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What the dashboard's handlers share, built once per app.

    Attributes:
        services: the API's services.
        pools: the configured pools, in configured order.
        snapshots: reads rows, the feed and history series.
        hub: the process's live follower of the pool logs.
        audit: reads one VM's events from the log.
        assets: the page and its static files (name -> (bytes, content type)).
    """

    services: Services
    pools: list[str]
    snapshots: Snapshots
    hub: Hub
    audit: AuditLog
    assets: dict[str, tuple[bytes, str]]

    @classmethod
    def build(cls, s: Services) -> Dashboard:
        deps, settings = s.deps, s.settings
        # the dashboard's own connection pool when the composition root gives one, so open
        # dashboards never take the connections the API and the manager need
        redis = deps.dashboard_redis or deps.redis
        reads = ReadModels(redis, deps.keys) if deps.dashboard_redis is not None else deps.reads
        pools = list(settings.pool_names)
        sizes = {p.name: p.size for p in settings.pools}
        snapshots = Snapshots(redis, deps.keys, reads, pools, sizes)
        max_streams = settings.config.dashboard_max_streams
        return cls(
            services=s,
            pools=pools,
            snapshots=snapshots,
            hub=Hub(redis, deps.keys, snapshots, max_streams=max_streams),
            audit=AuditLog(redis, deps.keys),
            assets=_assets(settings.config.site_name or "vmpooler"),
        )

    def now(self) -> int:
        return self.services.deps.clock()

    async def close(self) -> None:
        """Stop the live follower; close the dashboard's own Redis client, if it has one."""
        await self.hub.stop()
        if self.services.deps.dashboard_redis is not None:
            await self.services.deps.dashboard_redis.aclose()


def dashboard_of(request: Request[Any, Any, Any]) -> Dashboard:
    """The :class:`Dashboard` of the app serving ``request`` (``app.state.dashboard``)."""
    return cast(Dashboard, request.app.state.dashboard)


@get("/dashboard/", include_in_schema=False)
async def page(request: Request[Any, Any, Any]) -> Response[bytes]:
    dashboard = dashboard_of(request)
    content, media = dashboard.assets["index.html"]
    return Response(content=content, media_type=media, headers=_STATIC_HEADERS)


@get("/dashboard/static/{name:str}", include_in_schema=False)
async def static(name: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    dashboard = dashboard_of(request)
    found = dashboard.assets.get(name)
    if found is None or name == "index.html":
        return json_response({"ok": False}, 404, headers=NOSNIFF)
    return Response(content=found[0], media_type=found[1], headers=_STATIC_HEADERS)


@get(
    "/dashboard/data",
    summary="Dashboard snapshot",
    description="Pools as rows `[size, ready, cloning, booting, running, completed]`, today's clone "
    "and boot times, the latest events, and `cursor`: the log position to follow from.",
)
async def data(request: Request[Any, Any, Any]) -> Response[bytes]:
    dashboard = dashboard_of(request)
    site_name = dashboard.services.settings.config.site_name
    return _compact(await dashboard.snapshots.snapshot(dashboard.now(), site_name))


@get(
    "/dashboard/history",
    summary="Dashboard history series",
    description="`window=hour` (60 minute points, default) or `day` (24 hour points); `since=<ms>` "
    "returns only the points from that time on.",
)
async def history(request: Request[Any, Any, Any]) -> Response[bytes]:
    dashboard = dashboard_of(request)
    window = request.query_params.get("window") or "hour"
    since = request.query_params.get("since") or ""
    if window not in ("hour", "day") or (since and not since.isdigit()):
        return json_response({"ok": False}, 400)
    return _compact(await dashboard.snapshots.series(window, dashboard.now(), int(since) if since else None))


@get(
    "/dashboard/events",
    include_in_schema=False,  # an endless text/event-stream, not a JSON operation
    summary="Live dashboard updates (server-sent events)",
    description="Messages `update` (`{events, rows}`, id = log position) and `resync`. Resumes "
    "after `Last-Event-ID`, or after `?since=<position>` on a first connection.",
)
async def live(request: Request[Any, Any, Any]) -> Response[Any]:
    dashboard = dashboard_of(request)
    since = request.headers.get("last-event-id") or request.query_params.get("since") or None
    if since is not None and not _POSITION.match(since):
        return json_response({"ok": False}, 400, headers=NOSNIFF)
    ticket = dashboard.hub.admit()
    if ticket is None:  # dashboard_max_streams are open: come back later (EventSource retries)
        body = {"ok": False, "error": "too many open dashboard streams"}
        return json_response(body, 503, headers={"Retry-After": _RETRY_AFTER, **NOSNIFF})
    return Stream(
        sse_stream(dashboard.hub, since, ticket=ticket),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **NOSNIFF},
    )


@get("/dashboard/vm/{name:str}", summary="One VM's events, oldest first")
async def vm_history(name: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    dashboard = dashboard_of(request)
    history = await dashboard.audit.for_vm(name)
    if not history:
        return json_response({"ok": False}, 404, headers=NOSNIFF)
    events = [
        {
            "pos": r.position,
            "at": r.at,
            "type": r.type,
            "actor": r.actor,
            "correlation_id": r.correlation_id,
            "event": msgspec.to_builtins(r.event),
        }
        for r in history
    ]
    body = {"ok": True, "vm": name, "pool": history[0].stream, "events": events}
    return json_response(body, headers=NOSNIFF)


@get(
    "/dashboard/stats/vmpooler/pool",
    summary="Ready and size per pool (vmpooler's dashboard feed)",
    description="`?history=1` adds `history`: ready at the end of each of the last 60 minutes.",
)
async def stats_pool(request: Request[Any, Any, Any]) -> Response[bytes]:
    dashboard = dashboard_of(request)
    pools = dashboard.pools
    rows = await dashboard.snapshots.rows(pools)
    body: dict[str, Any] = {p: {"size": rows[p][0], "ready": rows[p][1]} for p in pools}
    if _flag(request, "history"):
        series = await dashboard.snapshots.history.minutes(pools, dashboard.now())
        for p in pools:
            body[p]["history"] = series[p].ready
    return json_response(body, headers=NOSNIFF)


@get(
    "/dashboard/stats/vmpooler/running",
    summary="Running VMs per OS family (vmpooler's dashboard feed)",
    description="Pools grouped by the name before the first `-`; `?history=1` adds the last 60 minutes.",
)
async def stats_running(request: Request[Any, Any, Any]) -> Response[bytes]:
    dashboard = dashboard_of(request)
    pools = dashboard.pools
    rows = await dashboard.snapshots.rows(pools)
    body: dict[str, Any] = {}
    for p in pools:
        body.setdefault(major(p), {"running": 0})["running"] += rows[p][4]
    if _flag(request, "history"):
        series = await dashboard.snapshots.history.minutes(pools, dashboard.now())
        for p in pools:
            entry = body[major(p)]
            points = series[p].running
            entry["history"] = [
                a + b for a, b in zip(entry.get("history", [0] * len(points)), points, strict=True)
            ]
    return json_response(body, headers=NOSNIFF)


DASHBOARD_ROUTES = [page, static, data, history, live, vm_history, stats_pool, stats_running]
