"""Pure renderers of ``/status``, ``/poolstat``, ``/totalrunning`` and ``/config`` bodies."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import unquote_plus

from commands.redact import SAFE_POOL_KEYS, redact
from commands.settings import PoolSettings, Settings
from projectors.daily_stats import DurationStats
from projectors.views import PoolStatusView

from ._render import effective_size, effective_template, ruby_round, ruby_time

__all__ = [
    "SECTIONS",
    "config_body",
    "pools_matching",
    "poolstat_body",
    "query_param",
    "status_body",
    "task_body",
]

SECTIONS = ("boot", "capacity", "clone", "pools", "queue", "status")
"""``/status`` top-level keys, in the (alphabetical) order vmpooler prints them."""

_FULLY_ARMED = "Battle station fully armed and operational."


def query_param(query_string: bytes, name: str) -> tuple[bool, str | None]:
    """Rack's reading of one query parameter: ``(present, value)``.

    ``?name`` (no ``=``) is present with value ``None``; ``?name=`` is present with ``""``; when
    repeated, the last one wins.
    """
    present, value = False, None
    for part in query_string.decode("utf-8", "replace").split("&"):
        key, eq, raw = part.partition("=")
        if unquote_plus(key) == name:
            present, value = True, unquote_plus(raw) if eq else None
    return present, value


def task_body(stats: DurationStats) -> dict[str, Any]:
    """One day's clone or boot statistics as vmpooler's ``get_task_metrics`` shows them."""
    if stats.count == 0:
        return {"duration": {"average": 0, "min": 0, "max": 0, "total": 0}, "count": {"total": 0}}
    return {
        "duration": {
            "average": ruby_round(stats.total / stats.count, 1),
            "min": float(stats.min),
            "max": float(stats.max),
            "total": float(stats.total),
        },
        "count": {"total": stats.count},
    }


def _count(view: PoolStatusView, *states: str) -> int:
    return sum(view.counts.get(state, 0) for state in states)


def _capacity(settings: Settings, views: Mapping[str, PoolStatusView]) -> dict[str, Any]:
    current = sum(_count(views[p.name], "ready") for p in settings.pools)
    total = sum(effective_size(p, views[p.name]) for p in settings.pools)
    percent: float = ruby_round(current / total * 100.0, 1) if total > 0 else 0
    return {"current": current, "total": total, "percent": percent}


def _queue(settings: Settings, views: Mapping[str, PoolStatusView]) -> dict[str, int]:
    def total(*states: str) -> int:
        return sum(_count(views[p.name], *states) for p in settings.pools)

    # vmpooler's `requested` means on-demand work not yet pending (always 0 there, a key-name bug).
    # Its completed set keeps a VM until the destroy is done.
    requested = sum(views[p.name].requested for p in settings.pools)
    cloning, booting = total("cloning"), total("booting")
    ready, running, completed = total("ready"), total("running"), total("completed", "destroying")
    pending = cloning + booting
    return {
        "requested": requested,
        "pending": pending,
        "cloning": cloning,
        "booting": booting,
        "ready": ready,
        "running": running,
        "completed": completed,
        "total": requested + pending + ready + running + completed,
    }


def _pool_entry(pool: PoolSettings, view: PoolStatusView) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ready": _count(view, "ready"),
        "running": _count(view, "running"),
        "pending": _count(view, "cloning", "booting"),
        "max": effective_size(pool, view),
        "lastBoot": ruby_time(view.last_boot) if view.last_boot else "",
    }
    if pool.alias_as_configured is not None:
        entry["alias"] = pool.alias_as_configured
    return entry


def status_body(
    settings: Settings,
    wanted: Collection[str],
    views: Mapping[str, PoolStatusView],
    clone: DurationStats | None,
    boot: DurationStats | None,
    uptime_seconds: float,
) -> dict[str, Any]:
    """``/status``: the ``wanted`` sections (``status`` always), keys sorted as vmpooler prints them."""
    status: dict[str, Any] = {"ok": True, "message": _FULLY_ARMED}
    out: dict[str, Any] = {"status": status}
    if "capacity" in wanted:
        out["capacity"] = _capacity(settings, views)
    if "queue" in wanted:
        out["queue"] = _queue(settings, views)
    if "clone" in wanted and clone is not None:
        out["clone"] = task_body(clone)
    if "boot" in wanted and boot is not None:
        out["boot"] = task_body(boot)
    if "pools" in wanted:
        pools = {p.name: _pool_entry(p, views[p.name]) for p in settings.pools}
        empty = [name for name, e in pools.items() if e["ready"] == 0 and e["max"] != 0]
        if empty:
            status.update(ok=False, message=f"Found {len(empty)} empty pools.", empty=empty)
        out["pools"] = pools
    status["uptime"] = ruby_round(uptime_seconds, 1)
    return {key: out[key] for key in SECTIONS if key in out}


def pools_matching(settings: Settings, names: Collection[str]) -> list[PoolSettings]:
    """Configured pools whose name or one of whose aliases is in ``names`` (configured order)."""
    return [p for p in settings.pools if p.name in names or any(a in names for a in p.alias)]


def poolstat_body(pools: list[PoolSettings], views: Mapping[str, PoolStatusView]) -> dict[str, Any]:
    """``/poolstat``: ``{"pools": {"<name>": {"max", "alias" (if any), "ready"}}}``."""
    out: dict[str, Any] = {}
    for pool in pools:
        view = views[pool.name]
        entry: dict[str, Any] = {"max": effective_size(pool, view)}
        if pool.alias_as_configured is not None:
            entry["alias"] = pool.alias_as_configured
        entry["ready"] = _count(view, "ready")
        out[pool.name] = entry
    return {"pools": out}


def _pool_config(pool: PoolSettings, view: PoolStatusView) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": pool.name}
    if pool.alias_as_configured is not None:
        entry["alias"] = pool.alias_as_configured
    entry["template"] = effective_template(pool, view)
    entry["size"] = effective_size(pool, view)
    entry["provider"] = pool.provider
    if pool.dns_plugin:
        entry["dns_plugin"] = pool.dns_plugin
    if pool.clone_target:
        entry["clone_target"] = pool.clone_target
    entry["timeout"] = pool.timeout
    entry["ready_ttl"] = pool.ready_ttl
    # Only options known to be safe leave the server, at any depth (vmpooler's /config shows the pool
    # hashes as loaded; its /full_config leaks everything, which we do not serve at all).
    entry.update({k: v for k, v in redact(pool.options, SAFE_POOL_KEYS).items() if k not in entry})
    # vmpooler compares the template the manager last prepared; we have no preparation step.
    entry["template_ready"] = True
    return entry


def config_body(settings: Settings, views: Mapping[str, PoolStatusView]) -> dict[str, Any]:
    """``/config``: the configured pools with their effective size and template; never secrets."""
    return {
        "pool_configuration": [_pool_config(p, views[p.name]) for p in settings.pools],
        "status": {"ok": True},
    }
