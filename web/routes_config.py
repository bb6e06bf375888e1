"""vmpooler's experimental run-time configuration endpoints (reference §1.2 "Configuration endpoints",
§2.4): pool size, template and clone target overrides, their undo, and pool reset.

All are gated by ``config.experimental_features`` (405 ``{"ok": false}`` first). Where vmpooler
crashes (invalid JSON, an alias in the body) these answer: 400 ``message`` and, for an alias,
the override applies to every pool it names.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response, delete, post
from litestar.params import FromPath

from commands.checkout import Requester
from commands.metrics import metric_segment
from commands.pool import Meta
from commands.settings import Settings
from web._access import Target, authorize
from web._deps import Services, services_of
from web._json import json_response, read_body
from web.errors import check
from web.routes_vm import PREFIX, docs
from web.validation import ValidationFailure, parse_json_payload

__all__ = ["CONFIG_ROUTES"]

_NOT_OK: dict[str, Any] = {"ok": False}
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_GATE = (
    '; 405 `{"ok": false}` unless `experimental_features` is on; with `:auth:`, 401 without a valid token'
    " and, with `:auth: admins` set, 403 for anyone else's"
)
_403 = '{"ok": false, "error": "only admins may change pools"}'


def _size(value: Any) -> int | None:
    """Ruby's ``Integer(value)`` for the shapes JSON gives (decimal strings; no hex or octal)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def _bad_template(value: Any) -> bool:
    return not isinstance(value, str) or "/" not in value or value.startswith("/") or value.endswith("/")


def _pools(settings: Settings, name: str) -> list[str]:
    """The pools a requested name means: the pool itself, else every pool the alias names."""
    if settings.pool(name) is not None:
        return [name]
    return list(settings.aliases().get(name, ()))


async def _gate(s: Services, request: Request[Any, Any, Any], target: Target) -> Requester | None:
    """``None`` when the experimental endpoints are off (the caller answers 405, before anything
    else, as vmpooler); else the requester, who with auth configured needs a valid token, and an
    admin's one when ``:auth: admins`` is set (raises: 401, 403)."""
    if not s.settings.config.experimental_features:
        return None
    return await authorize(s, request, target, required=True)


async def _opened(
    s: Services, request: Request[Any, Any, Any], action: str, family: str = "config"
) -> tuple[dict[str, Any], Requester] | Response[bytes]:
    """The request's JSON object and requester, or the answer to give instead (see :func:`_gate`);
    404 for a JSON ``null``; bad JSON raises (400) and counts ``<family>.invalid.unknown``."""
    if not s.settings.config.experimental_features:
        return json_response(_NOT_OK, 405)
    payload = parse_json_payload(await read_body(request))
    named = [p for n in payload for p in _pools(s.settings, n)] if isinstance(payload, dict) else []
    requester = await _gate(s, request, Target("pools", action, pools=tuple(dict.fromkeys(named))))
    assert requester is not None  # the gate is open
    if isinstance(payload, ValidationFailure):
        s.deps.metrics.increment(f"{family}.invalid.unknown")
    body = check(payload)
    return json_response(_NOT_OK, 404) if body is None else (body, requester)


def _count_invalid(s: Services, family: str, names: list[str]) -> None:
    for name in dict.fromkeys(names):
        s.deps.metrics.increment(f"{family}.invalid.{metric_segment(name)}")


async def _apply(
    s: Services,
    opened: tuple[dict[str, Any], Requester],
    invalid: list[str],
    key: str,
    action: Callable[[str, Any, Meta], Awaitable[bool]],
) -> Response[bytes]:
    body, requester = opened
    if invalid:
        _count_invalid(s, "config", invalid)
        return json_response({"ok": False, key: invalid}, 400)
    m, changed = requester.meta(s.deps.new_id()), False
    for name, value in body.items():
        for pool in _pools(s.settings, name):
            changed = await action(pool, value, m) or changed
    return json_response({"ok": True}, 201 if changed else 200)


@post(
    f"{PREFIX}/config/poolsize",
    summary="Override pool sizes",
    status_code=200,
    description='Body `{"<pool>": "<size>"}`' + _GATE,
    responses=docs(s200="unchanged", s201="changed", s400="`not_configured` or `message`", s403=_403),
)
async def poolsize(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    opened = await _opened(services, request, "poolsize")
    if isinstance(opened, Response):
        return opened
    body = opened[0]
    invalid: list[str] = []
    for name, value in body.items():
        if not _pools(services.settings, name):
            invalid.append(name)
        size = _size(value)
        if size is None or size < 0:
            invalid.append(name)
    service = services.pool_config

    async def set_size(pool: str, value: Any, m: Meta) -> bool:
        return await service.set_size(pool, _size(value) or 0, m)

    return await _apply(services, opened, invalid, "not_configured", set_size)


@post(
    f"{PREFIX}/config/pooltemplate",
    summary="Override pool templates (drains)",
    status_code=200,
    description='Body `{"<pool>": "<template path>"}`' + _GATE,
    responses=docs(s200="unchanged", s201="changed", s400="`bad_templates` or `message`", s403=_403),
)
async def pooltemplate(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    opened = await _opened(services, request, "pooltemplate")
    if isinstance(opened, Response):
        return opened
    body = opened[0]
    invalid: list[str] = []
    for name, value in body.items():
        if not _pools(services.settings, name):
            invalid.append(name)
        if _bad_template(value):
            invalid.append(name)
    return await _apply(services, opened, invalid, "bad_templates", services.pool_config.set_template)


@post(
    f"{PREFIX}/config/clonetarget",
    summary="Override clone targets (drains)",
    status_code=200,
    description='Body `{"<pool>": "<cluster>"}`' + _GATE,
    responses=docs(s200="unchanged", s201="changed", s400="`bad_templates` or `message`", s403=_403),
)
async def clonetarget(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    opened = await _opened(services, request, "clonetarget")
    if isinstance(opened, Response):
        return opened
    body = opened[0]
    settings = services.settings
    invalid = [n for n, v in body.items() if not _pools(settings, n) or not isinstance(v, str)]
    return await _apply(services, opened, invalid, "bad_templates", services.pool_config.set_clone_target)


@post(
    f"{PREFIX}/poolreset",
    summary="Drain and refill pools",
    status_code=201,
    description='Body `{"<pool>": "<anything>"}`' + _GATE,
    responses=docs(s201='{"ok": true}', s400="`bad_pools` or `message`", s403=_403),
)
async def poolreset(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    opened = await _opened(services, request, "poolreset", "poolreset")
    if isinstance(opened, Response):
        return opened
    body, requester = opened
    settings = services.settings
    invalid = [n for n in body if not _pools(settings, n)]
    if invalid:
        _count_invalid(services, "poolreset", invalid)
        return json_response({"ok": False, "bad_pools": invalid}, 400)
    m = requester.meta(services.deps.new_id())
    for name in body:
        for pool in _pools(settings, name):
            await services.pool_config.reset(pool, m)
    return json_response({"ok": True}, 201)


async def _undo(
    s: Services,
    request: Request[Any, Any, Any],
    name: str,
    action: Callable[[str, Meta], Awaitable[tuple[bool, Any, Any]]],
    field: str,
) -> Response[bytes]:
    pools = _pools(s.settings, name)
    requester = await _gate(s, request, Target("pools", f"undo_{field}", pools=tuple(pools[:1])))
    if requester is None:
        return json_response(_NOT_OK, 405)
    if not pools:
        return json_response(_NOT_OK, 404)
    changed, before, startup = await action(pools[0], requester.meta(s.deps.new_id()))
    body = {"ok": True, f"{field}_before_reset": before, f"{field}_before_overrides": startup}
    return json_response(body, 201 if changed else 200)


@delete(
    f"{PREFIX}/config/poolsize/{{pool:str}}",
    summary="Undo a pool size override",
    status_code=200,
    description="Back to the configured size" + _GATE,
    responses=docs(s200="unchanged", s201="restored", s403=_403, s404='{"ok": false}: unknown pool'),
)
async def undo_size(pool: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    return await _undo(services, request, pool, services.pool_config.undo_size, "pool_size")


@delete(
    f"{PREFIX}/config/pooltemplate/{{pool:str}}",
    summary="Undo a pool template override",
    status_code=200,
    description="Back to the configured template (drains)" + _GATE,
    responses=docs(s200="unchanged", s201="restored", s403=_403, s404='{"ok": false}: unknown pool'),
)
async def undo_template(pool: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    return await _undo(services, request, pool, services.pool_config.undo_template, "template")


CONFIG_ROUTES = [poolsize, pooltemplate, clonetarget, poolreset, undo_size, undo_template]
