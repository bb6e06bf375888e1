"""``/api/v3/token``: create, list, show and revoke API tokens (HTTP basic auth, as vmpooler).

Tokens are stored hashed, so a listing shows each token by its SHA-256 (vmpooler shows the tokens in
clear); a token is shown in clear once, when it is created.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath

from commands.errors import NotFound, Unauthorized
from commands.tokens import token_hash
from web._deps import Services, services_of
from web._json import OK, json_response
from web._render import ruby_time
from web.routes_vm import PREFIX, docs

__all__ = ["TOKEN_ROUTES"]

_BASIC = "HTTP basic auth. 404 when `:auth:` is not configured."


def _enabled(s: Services) -> None:
    if not s.auth.configured:
        raise NotFound("authentication is not configured")


@get(
    f"{PREFIX}/token",
    summary="List your tokens",
    description=_BASIC,
    responses=docs(
        s200='{"ok": true, "<token sha256>": {"created", "last"}}',
        s401='{"ok": false}',
        s404='{"ok": false}: no tokens, or auth not configured',
    ),
)
async def list_tokens(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _enabled(services)
    auth = services.auth
    mine = await auth.tokens.for_user(await auth.basic_user(request))
    if not mine:
        raise NotFound("no tokens")
    body: dict[str, Any] = {"ok": True}
    for digest, info in mine.items():
        body[digest] = {
            "created": ruby_time(info.created),
            "last": ruby_time(info.last) if info.last else "never",
        }
    return json_response(body)


@post(
    f"{PREFIX}/token",
    summary="Create a token",
    status_code=200,
    description=_BASIC,
    responses=docs(
        s200='{"ok": true, "token": "<32 characters>"}',
        s401='{"ok": false}',
        s404='{"ok": false}: auth not configured',
    ),
)
async def create_token(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _enabled(services)
    auth = services.auth
    return json_response({"ok": True, "token": await auth.tokens.create(await auth.basic_user(request))})


@get(
    f"{PREFIX}/token/{{token:str}}",
    summary="Show a token and its running VMs",
    responses=docs(
        s200='{"ok": true, "<token>": {"user", "created", "last", "vms": {"running": [...]}}}',
        s404='{"ok": false}: no such token, or auth not configured',
    ),
)
async def show_token(token: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _enabled(services)
    info = await services.auth.tokens.lookup(token)
    if info is None:
        raise NotFound("no such token")
    shown: dict[str, Any] = {"user": info.user, "created": ruby_time(info.created)}
    if info.last:
        shown["last"] = ruby_time(info.last)
    running = await services.deps.reads.running_for_token(token_hash(token), services.pool_names)
    if running:
        shown["vms"] = {"running": sorted(vm for vms in running.values() for vm in vms)}
    return json_response({"ok": True, token: shown})


@delete(
    f"{PREFIX}/token/{{token:str}}",
    summary="Revoke one of your tokens",
    status_code=200,
    description=_BASIC + " Only the token's owner may revoke it.",
    responses=docs(
        s200='{"ok": true}',
        s401='{"ok": false}: bad credentials, or no such token of yours',
        s404='{"ok": false}: auth not configured',
    ),
)
async def revoke_token(token: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _enabled(services)
    auth = services.auth
    if not await auth.tokens.revoke(token, await auth.basic_user(request)):
        raise Unauthorized("no such token of yours")  # vmpooler answers 401 for a missing token
    return json_response(OK)


TOKEN_ROUTES = [list_tokens, create_token, show_token, revoke_token]
