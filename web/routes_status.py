"""Status and configuration reads (``/status``, ``/poolstat``, ``/totalrunning``, ``/config``),
``/healthcheck`` and the ``/`` redirect. Everything here reads projections only."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Request, Response, get
from litestar.response import Redirect

from commands.telemetry import check_health
from projectors.daily_stats import day_of
from projectors.read_stats import combine
from web._deps import HEALTH_MAX_LAG, Services, services_of
from web._json import json_response
from web._render_status import (
    SECTIONS,
    config_body,
    pools_matching,
    poolstat_body,
    query_param,
    status_body,
)
from web.routes_vm import PREFIX, docs

__all__ = ["STATUS_ROUTES"]

log = logging.getLogger(__name__)

_HEALTH_TIMEOUT_S = 2.0
_NAMED = 10
"""Pools named in the "no live manager" problem line; the rest are counted."""


@get(
    f"{PREFIX}/status",
    summary="Pool and queue status",
    description="`?view=a,b` selects sections (boot, capacity, clone, pools, queue; status is always "
    "there); no `view` or a bare `?view` gives all, `?view=` only status.",
    responses=docs(s200="{boot, capacity, clone, pools, queue, status}"),
)
async def status(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    deps, pool_names = services.deps, services.pool_names
    present, value = query_param(request.scope["query_string"], "view")
    wanted = set(SECTIONS) if not present or value is None else set(value.split(","))
    needs_pools = bool(wanted & {"capacity", "queue", "pools"})
    needs_stats = bool(wanted & {"clone", "boot"})
    now = deps.clock()
    views, day = await asyncio.gather(
        deps.reads.pool_status(pool_names if needs_pools else []),
        services.stats.day(pool_names if needs_stats else [], day_of(now)),
    )
    clone = combine(v.clone for v in day.values()) if needs_stats else None
    boot = combine(v.boot for v in day.values()) if needs_stats else None
    uptime = (now - deps.started_at) / 1000
    return json_response(status_body(deps.settings, wanted, views, clone, boot, uptime))


@get(
    f"{PREFIX}/poolstat",
    summary="Ready and size of some pools",
    description="`?pool=a,b`: pools named, or aliased, by any of the names.",
    responses=docs(s200='{"pools": {"<pool>": {"max", "alias", "ready"}}}'),
)
async def poolstat(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _, value = query_param(request.scope["query_string"], "pool")
    pools = pools_matching(services.settings, set(value.split(","))) if value else []
    views = await services.deps.reads.pool_status([p.name for p in pools])
    return json_response(poolstat_body(pools, views))


@get(
    f"{PREFIX}/totalrunning",
    summary="Checked-out VMs across pools",
    responses=docs(s200='{"running": <n>}'),
)
async def totalrunning(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    views = await services.deps.reads.pool_status(services.pool_names)
    return json_response({"running": sum(v.counts.get("running", 0) for v in views.values())})


@get(
    f"{PREFIX}/config",
    summary="Pool configuration",
    description="The configured pools with their effective size and template (no secrets).",
    responses=docs(
        s200='{"pool_configuration": [...], "status": {"ok": true}}',
        s404='{"ok": false}: no pools configured',
    ),
)
async def config(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    if not services.pool_names:
        return json_response({"ok": False}, 404)
    views = await services.deps.reads.pool_status(services.pool_names)
    return json_response(config_body(services.settings, views))


@get(
    "/healthcheck",
    summary="Health: Redis, projector lag, worker and manager liveness",
    description="200 when Redis answers, no projection is more than "
    f"{HEALTH_MAX_LAG} entries behind on a pool, a worker is alive whenever "
    "work waits, and a live manager holds every pool's lease; 503 otherwise. The body explains "
    "(`problems`).",
    responses=docs(
        s200='{"ok": true, "redis": true, "lag": {"<group>": <entries>}, "workers": '
        '{"live": <n>, "waiting": <n>}, "managers": {"unmanaged": 0}, "problems": []}',
        s503='{"ok": false, ...} with `problems`; {"ok": false, "redis": false} when Redis does not answer',
    ),
)
async def healthcheck(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    deps = services.deps
    # a busy worker heartbeats every third of the reclaim idle time; give it a whole idle time
    live_ms = max(60_000, deps.settings.config.reclaim_idle_seconds * 1000)
    try:
        async with asyncio.timeout(_HEALTH_TIMEOUT_S):
            await deps.redis.ping()
            health, unmanaged = await asyncio.gather(
                check_health(services.probe, services.pool_names, max_lag=HEALTH_MAX_LAG, live_ms=live_ms),
                _unmanaged(services),
            )
    except Exception as exc:  # any failure to answer is "unhealthy", never a 500
        log.warning("healthcheck: Redis does not answer: %r", exc)
        return json_response({"ok": False, "redis": False}, 503)
    problems = list(health.problems)
    if unmanaged:
        shown = ", ".join(unmanaged[:_NAMED]) + (
            f" and {len(unmanaged) - _NAMED} more" if len(unmanaged) > _NAMED else ""
        )
        problems.append(f"no live manager holds {len(unmanaged)} pool(s): {shown}")
    body = {
        "ok": not problems,
        "redis": True,
        "lag": health.lag,
        "workers": {"live": health.live_workers, "waiting": health.waiting},
        "managers": {"unmanaged": len(unmanaged)},
        "problems": problems,
    }
    return json_response(body, 503 if problems else 200)


async def _unmanaged(services: Services) -> list[str]:
    """The pools whose manager lease nobody holds: a manager renews it every few seconds, so an
    absent lease means no live manager has held it for a whole lease TTL (one round trip)."""
    keys = services.deps.keys
    async with services.deps.redis.pipeline(transaction=False) as pipe:
        for pool in services.pool_names:
            pipe.exists(keys.lease(pool, "manager"))
        held = await pipe.execute()
    return [pool for pool, found in zip(services.pool_names, held, strict=True) if not found]


@get("/", summary="Redirect to the dashboard", include_in_schema=False)
async def root() -> Redirect:
    return Redirect(path="/dashboard/", status_code=302)


STATUS_ROUTES = [status, poolstat, totalrunning, config, healthcheck, root]
