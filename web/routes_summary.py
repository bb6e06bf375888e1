"""``/api/v3/summary``: clone, boot and tag statistics over a range of days.

Reads the daily statistics projection only. Validation failures are JSON
``{"ok": false, "error": ...}`` with vmpooler's messages (vmpooler sends the bare message as text).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from commands.errors import NotFound
from projectors.daily_stats import day_of
from web._deps import Services
from web._json import json_response
from web._render_status import query_param
from web._render_summary import TASKS, Days, date_range, summary_body, tag_section, task_section
from web.errors import check
from web.routes_vm import PREFIX, docs

__all__ = ["summary_routes"]

_RANGE = "`?from=YYYY-MM-DD&to=YYYY-MM-DD` (inclusive, UTC; each defaults to today)."
_400 = '{"ok": false, "error": "<why>"}: malformed date, or an invalid range'


def summary_routes(s: Services) -> list[HTTPRouteHandler]:
    """The summary endpoints, closed over the services built once by ``create_app``."""
    deps = s.deps
    pool_names = list(deps.settings.pool_names)

    def days_asked(request: Request[Any, Any, Any]) -> list[str]:
        query = request.scope["query_string"]
        _, from_param = query_param(query, "from")
        _, to_param = query_param(query, "to")
        return check(date_range(from_param, to_param, day_of(deps.clock())))

    async def stats(days: list[str]) -> Days:
        return await s.stats.days(pool_names, days)

    @get(
        f"{PREFIX}/summary",
        summary="Clone, boot and tag statistics over days",
        description=_RANGE,
        responses=docs(
            s200='{"boot", "clone", "tag", "daily": [{"date", "boot", "clone", "tag"}, ...]}', s400=_400
        ),
    )
    async def summary(request: Request[Any, Any, Any]) -> Response[bytes]:
        return json_response(summary_body(await stats(days_asked(request))))

    async def section(request: Request[Any, Any, Any], name: str, key: str | None) -> Response[bytes]:
        days = days_asked(request)
        if name in TASKS:
            return json_response(task_section(name, await stats(days), key))
        if name == "tag":
            return json_response(tag_section(await stats(days), key))
        raise NotFound(name)

    _section_docs = docs(
        s200='{"<section>": ..., "daily": [{"date", "<section>"}, ...]}',
        s400=_400,
        s404='{"ok": false}: not boot, clone or tag',
    )

    @get(
        f"{PREFIX}/summary/{{name:str}}",
        summary="One section of the summary",
        responses=_section_docs,
        description=f"`boot`, `clone` or `tag`; {_RANGE}",
    )
    async def summary_section(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        return await section(request, name, None)

    @get(
        f"{PREFIX}/summary/{{name:str}}/{{key:str}}",
        summary="Part of one section of the summary",
        responses=_section_docs,
        description=f"boot/clone keep only `duration` or `count`; tag keeps one tag name. {_RANGE}",
    )
    async def summary_section_key(
        request: Request[Any, Any, Any], name: FromPath[str], key: FromPath[str]
    ) -> Response[bytes]:
        return await section(request, name, key)

    return [summary, summary_section, summary_section_key]
