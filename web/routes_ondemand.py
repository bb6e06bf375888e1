"""``/api/v3/ondemandvm``: ask for VMs to be provisioned for you, follow the request, cancel it.

``POST`` records an ``ondemand.accepted`` event, ``DELETE`` an ``ondemand.cancelled`` one (both one
decision in the control slot); the manager does the rest. ``GET`` reads the on-demand projection.
Bodies, statuses and messages are vmpooler's (reference §1.2).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath

from commands.checkout import Requester
from commands.errors import ConflictError, NotFound
from commands.metrics import metric_segment
from projectors.ondemand import OndemandView
from web._access import Target, authorize
from web._deps import Services, services_of
from web._json import json_response, read_body
from web._quota import check_caps
from web._render import hostname
from web.errors import check
from web.routes_vm import PREFIX, docs
from web.validation import ValidationFailure, checkout_request_from_path, parse_json_payload

__all__ = ["ONDEMAND_ROUTES", "ondemand_body", "parse_counts"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def parse_counts(payload: Mapping[str, object]) -> list[tuple[str, int]] | ValidationFailure:
    """``{"<name>": "<count>", ...}`` -> ``(name, count)`` pairs; a count must be a positive integer
    (a JSON integer or a string of digits). vmpooler turns anything else into 0 VMs silently; its
    documented intent is a count, so anything else is a 400 here."""
    wanted: list[tuple[str, int]] = []
    for name, raw in payload.items():
        if isinstance(raw, int) and not isinstance(raw, bool):
            count = raw
        elif isinstance(raw, str) and _DIGITS.fullmatch(raw):
            count = int(raw)
        else:
            return ValidationFailure(f"VM count for '{name}' must be a positive integer", key="message")
        if count < 1:
            return ValidationFailure(f"VM count for '{name}' must be at least 1", key="message")
        wanted.append((name, count))
    return wanted


def ondemand_body(
    s: Services, request_id: str, found: tuple[OndemandView, dict[str, list[tuple[str, str]]]]
) -> tuple[dict[str, Any], int]:
    """``GET /ondemandvm/<id>``'s body and status for a request found in the projection."""
    view, delivered = found
    body: dict[str, Any] = {"ok": True, "request_id": request_id}
    settings = s.deps.settings
    if view.status == "ready":
        body["ready"] = True
        for requested in view.requested:
            vms = delivered.get(requested, [])
            body[requested] = {"hostname": [hostname(settings, pool, vm) for pool, vm in vms]}
        return body, 200
    body["ready"] = False
    if view.status == "failed":
        ttl = settings.config.ondemand_request_ttl
        body["message"] = (
            f"The request failed to provision instances within the configured ondemand_request_ttl '{ttl}'"
        )
        return body, 200
    if view.status == "deleted":
        body["message"] = "The request has been deleted"
        return body, 200
    for requested, pools in view.requested.items():
        ready = len(delivered.get(requested, []))
        body[requested] = {"ready": str(ready), "pending": str(sum(pools.values()) - ready)}
    return body, 202


def _not_found(request_id: str) -> Response[bytes]:
    return json_response({"ok": False, "message": f"no request found for request_id '{request_id}'"}, 404)


async def _create(
    s: Services, payload: dict[str, Any], request_id: object, requester: Requester
) -> Response[bytes]:
    settings, metrics = s.settings, s.deps.metrics
    if not payload:
        return json_response({"ok": False}, 404)
    bad = [name for name in payload if not settings.candidates(name)]
    if bad:
        for name in bad:
            metrics.increment(f"ondemandrequest_fail.invalid.{metric_segment(name)}")
        return json_response({"ok": False, "bad_templates": bad}, 404)
    wanted = check(parse_counts(payload))
    most = settings.config.max_ondemand_instances_per_request
    if any(count > most for _, count in wanted):
        for name, count in wanted:
            if count > most:
                metrics.increment(f"ondemandrequest_fail.toomanyrequests.{metric_segment(name)}")
        message = f"requested amount of instances exceeds the maximum {most}"
        return json_response({"ok": False, "message": message}, 403)
    await check_caps(s, requester, vms=sum(count for _, count in wanted), ondemand=True)
    if request_id is None:
        rid = str(uuid.uuid4())
    elif isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id):
        rid = request_id
    else:
        message = "request_id must be 1-100 letters, digits, '.', '_' or '-'"
        return json_response({"ok": False, "message": message}, 400)
    try:
        await s.ondemand.accept(rid, s.ondemand.plan(wanted), requester, requester.meta(rid))
    except ConflictError as exc:
        metrics.increment("ondemandrequest_generate.duplicaterequests")
        return json_response({"ok": False, "request_id": rid, "message": str(exc)}, 409)
    metrics.increment("ondemandrequest_generate.success")
    return json_response({"ok": True, "request_id": rid}, 201)


_POST_DOCS = docs(
    s201='{"ok": true, "request_id": "<id>"}',
    s400='{"ok": false, "message": "<why>"}: malformed body, count or request_id',
    s401='{"ok": false}: auth is configured and no valid X-AUTH-TOKEN was sent',
    s403='{"ok": false, "message": "requested amount of instances exceeds the maximum <n>"}, or '
    '{"ok": false, "error": ...} over a per-user cap',
    s404='{"ok": false, "bad_templates": [...]}: unknown pools or aliases',
    s409='{"ok": false, "request_id": "<id>", "message": ...}: request_id already used',
)


@post(
    f"{PREFIX}/ondemandvm",
    summary="Request VMs on demand (JSON body)",
    status_code=201,
    responses=_POST_DOCS,
    description='Body `{"<pool or alias>": "<count>", ..., "request_id": "<optional id>"}`.',
)
async def create_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    services.deps.metrics.increment("http_requests_vm_total.post.ondemand.requestid")
    requester = await authorize(services, request, Target("new", "ondemand"), required=True)
    payload = check(parse_json_payload(await read_body(request)))
    if payload is None:
        return json_response({"ok": False}, 404)
    payload = dict(payload)
    return await _create(services, payload, payload.pop("request_id", None), requester)


@post(
    f"{PREFIX}/ondemandvm/{{names:str}}",
    summary="Request VMs on demand (URL form)",
    status_code=201,
    responses=_POST_DOCS,
    description="`<a>+<b>+<a>`: one VM per occurrence of a pool or alias.",
)
async def create_path(names: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    services.deps.metrics.increment("http_requests_vm_total.delete.ondemand.template")  # sic: vmpooler's
    requester = await authorize(services, request, Target("new", "ondemand"), required=True)
    wanted = checkout_request_from_path(names)
    if isinstance(wanted, ValidationFailure):  # the ondemand endpoints answer with "message"
        wanted = msgspec.structs.replace(wanted, key="message")
    return await _create(services, dict(check(wanted)), None, requester)


@get(
    f"{PREFIX}/ondemandvm/{{request_id:str}}",
    summary="Show an on-demand request",
    responses=docs(
        s200='{"ok": true, "request_id", "ready": true, "<requested>": {"hostname": [...]}} or a failed/deleted message',
        s202='{"ok": true, "request_id", "ready": false, "<requested>": {"ready": "<n>", "pending": "<m>"}}',
        s404='{"ok": false, "message": "no request found for request_id \'<id>\'"}',
    ),
)
async def show(request_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    services.deps.metrics.increment("http_requests_vm_total.get.ondemand.request")
    found = await services.deps.reads.ondemand(request_id)
    if found is None:
        return _not_found(request_id)
    body, status = ondemand_body(services, request_id, found)
    return json_response(body, status)


@delete(
    f"{PREFIX}/ondemandvm/{{request_id:str}}",
    summary="Cancel an on-demand request",
    status_code=200,
    responses=docs(
        s200='{"ok": true} or {"ok": true, "message": "the request has already been deleted"}',
        s401='{"ok": false}: auth is configured and the request\'s token was not sent',
        s404='{"ok": false, "message": "no request found for request_id \'<id>\'"}',
    ),
)
async def cancel(request_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    s = services_of(request)
    s.deps.metrics.increment("http_requests_vm_total.delete.ondemand.request")
    # a request made with a token is cancelled with that token (or an admin's) only
    requester = await authorize(s, request, Target("request", "cancel", request_id), required=True)
    try:
        cancelled = await s.ondemand.cancel(request_id, requester.meta(request_id))
    except NotFound:
        return _not_found(request_id)
    return json_response(
        {"ok": True} if cancelled else {"ok": True, "message": "the request has already been deleted"}
    )


ONDEMAND_ROUTES = [create_json, create_path, show, cancel]
