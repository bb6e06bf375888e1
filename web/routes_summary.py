"""``/api/v3/summary``: clone, boot and tag statistics over a range of days.

Reads the daily statistics projection only. Validation failures are JSON
``{"ok": false, "error": ...}`` with vmpooler's messages (vmpooler sends the bare message as text).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath

from commands.errors import NotFound
from projectors.daily_stats import day_of
from web._deps import Services, services_of
from web._json import json_response
from web._render_status import query_param
from web._render_summary import TASKS, Days, date_range, summary_body, tag_section, task_section
from web.errors import check
from web.routes_vm import PREFIX, docs

__all__ = ["SUMMARY_ROUTES"]

_RANGE = "`?from=YYYY-MM-DD&to=YYYY-MM-DD` (inclusive, UTC; each defaults to today)."
_400 = '{"ok": false, "error": "<why>"}: malformed date, or an invalid range'


def _days_asked(s: Services, request: Request[Any, Any, Any]) -> list[str]:
    query = request.scope["query_string"]
    _, from_param = query_param(query, "from")
    _, to_param = query_param(query, "to")
    return check(date_range(from_param, to_param, day_of(s.deps.clock())))


async def _stats(s: Services, days: list[str]) -> Days:
    return await s.stats.days(s.pool_names, days)


@get(
    f"{PREFIX}/summary",
    summary="Clone, boot and tag statistics over days",
    description=_RANGE,
    responses=docs(
        s200='{"boot", "clone", "tag", "daily": [{"date", "boot", "clone", "tag"}, ...]}', s400=_400
    ),
)
async def summary(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    return json_response(summary_body(await _stats(services, _days_asked(services, request))))


async def _section(
    s: Services, request: Request[Any, Any, Any], name: str, key: str | None
) -> Response[bytes]:
    days = _days_asked(s, request)
    if name in TASKS:
        return json_response(task_section(name, await _stats(s, days), key))
    if name == "tag":
        return json_response(tag_section(await _stats(s, days), key))
    raise NotFound(name)


_SECTION_DOCS = docs(
    s200='{"<section>": ..., "daily": [{"date", "<section>"}, ...]}',
    s400=_400,
    s404='{"ok": false}: not boot, clone or tag',
)


@get(
    f"{PREFIX}/summary/{{name:str}}",
    summary="One section of the summary",
    responses=_SECTION_DOCS,
    description=f"`boot`, `clone` or `tag`; {_RANGE}",
)
async def summary_section(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    services = services_of(request)
    return await _section(services, request, name, None)


@get(
    f"{PREFIX}/summary/{{name:str}}/{{key:str}}",
    summary="Part of one section of the summary",
    responses=_SECTION_DOCS,
    description=f"boot/clone keep only `duration` or `count`; tag keeps one tag name. {_RANGE}",
)
async def summary_section_key(
    request: Request[Any, Any, Any], name: FromPath[str], key: FromPath[str]
) -> Response[bytes]:
    services = services_of(request)
    return await _section(services, request, name, key)


SUMMARY_ROUTES = [summary, summary_section, summary_section_key]
