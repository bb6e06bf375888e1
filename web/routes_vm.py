"""``/api/v3/vm``: list pools, check VMs out (JSON body or URL form), show, update and return a VM.

Handlers are thin: validate (``web.validation``) -> command or read -> render (``web._render``).
Failures are raised and rendered by ``web.errors``. Handlers get the app's :class:`Services` injected.
"""

from __future__ import annotations

from typing import Any, TypeVar

from litestar import Request, Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from commands.errors import NotFound, QuotaError
from commands.metrics import metric_segment
from web._access import Target, authorize
from web._deps import Services, services_of
from web._json import OK, json_response, read_body
from web._quota import check_caps
from web._render import checkout_body, vm_body
from web.errors import check
from web.validation import (
    ValidationFailure,
    checkout_request_from_body,
    checkout_request_from_path,
    parse_json_body,
    parse_vm_update,
    shorten_hostname,
    validate_hostname,
)

__all__ = ["VM_ROUTES", "docs"]

PREFIX = "/api/v3"

T = TypeVar("T")


def docs(**described: str) -> dict[int, ResponseSpec]:
    """OpenAPI responses from ``s<status>="description"`` pairs (bodies are JSON objects)."""
    return {
        int(status.removeprefix("s")): ResponseSpec(
            data_container=dict[str, Any], generate_examples=False, description=text
        )
        for status, text in described.items()
    }


_CHECKOUT_DOCS = docs(
    s200='{"ok": true, "<requested>": {"hostname": "<fqdn>" or ["<fqdn>", ...]}}',
    s400='{"ok": false, "error": "<why>"}: malformed body, bad pool name or count',
    s403='{"ok": false, "error": "<why>"}: over `:auth: max_running_per_user`',
    s404='{"ok": false}: nothing requested, or an unknown pool or alias',
    s503='{"ok": false}: not every VM could be had; none was handed out',
)
_CHECKOUT = Target("new", "checkout")
_HOSTNAME_400 = '{"ok": false, "error": "<why>"}: malformed hostname'


def _counted(s: Services, operation: str) -> None:
    s.deps.metrics.increment(f"http_requests_vm_total.{operation}")


async def _hand_out(
    s: Services, wanted: list[tuple[str, int]], request: Request[Any, Any, Any]
) -> Response[bytes]:
    # With auth configured, a sent X-AUTH-TOKEN must be valid (401); its user owns the VMs.
    requester = await authorize(s, request, _CHECKOUT, required=False)
    settings, metrics = s.settings, s.deps.metrics
    for name, _ in wanted:
        if not settings.candidates(name):
            metrics.increment(f"checkout.invalid.{metric_segment(name)}")
    await check_caps(s, requester, vms=sum(count for _, count in wanted))
    try:
        taken = await s.checkout.checkout(wanted, correlation_id=s.deps.new_id(), requester=requester)
    except QuotaError:
        for name in await _short_of(s, wanted):
            metrics.increment(f"checkout.empty.{metric_segment(name)}")
        raise
    return json_response(checkout_body(settings, taken))


async def _short_of(s: Services, wanted: list[tuple[str, int]]) -> list[str]:
    """The requested names that could not be served (by the status projection), for
    ``checkout.empty``; the only name when there is one."""
    if len(wanted) == 1:
        return [wanted[0][0]]
    settings = s.settings
    try:
        views = await s.deps.reads.pool_status(sorted({p for n, _ in wanted for p in settings.candidates(n)}))
    except Exception:  # a metric must never change the answer
        return [wanted[0][0]]
    ready = {pool: view.counts.get("ready", 0) for pool, view in views.items()}
    short = [n for n, count in wanted if sum(ready[p] for p in settings.candidates(n)) < count]
    return short or [wanted[0][0]]


def _checked(s: Services, result: T | ValidationFailure) -> T:
    """A checkout request's validated value; a malformed one counts ``checkout.invalid.unknown``."""
    if isinstance(result, ValidationFailure):
        s.deps.metrics.increment("checkout.invalid.unknown")
    return check(result)


@get(
    f"{PREFIX}/vm",
    summary="List the pools",
    description="Names of the configured pools (not their aliases).",
    responses=docs(s200='["<pool>", ...]'),
)
async def list_pools(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    return json_response(services.pool_names)


@post(
    f"{PREFIX}/vm",
    summary="Check out VMs (JSON body)",
    status_code=200,
    responses=_CHECKOUT_DOCS,
    description='Body `{"<pool or alias>": "<count>", ...}`; all VMs or none.',
)
async def checkout_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _counted(services, "post.vm.checkout")
    body = _checked(services, parse_json_body(await read_body(request)))
    return await _hand_out(services, _checked(services, checkout_request_from_body(body)), request)


@post(
    f"{PREFIX}/vm/{{hostname:str}}",
    summary="Check out VMs (URL form)",
    status_code=200,
    responses=_CHECKOUT_DOCS,
    description="`<a>+<b>+<a>`: one VM per occurrence of a pool or alias; the body is ignored.",
)
async def checkout_path(hostname: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _counted(services, "get.vm.template")  # vmpooler's name for this POST
    return await _hand_out(services, _checked(services, checkout_request_from_path(hostname)), request)


@get(
    f"{PREFIX}/vm/{{hostname:str}}",
    summary="Show a VM",
    responses=docs(
        s200='{"ok": true, "<vm>": {"template", "lifetime", "state", ...}}',
        s400=_HOSTNAME_400,
        s404='{"ok": false}: no such VM',
    ),
)
async def show_vm(hostname: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    _counted(services, "get.vm.hostname")
    vm = shorten_hostname(check(validate_hostname(hostname)))
    deps = services.deps
    view = await deps.reads.vm(vm)
    body = vm_body(view, deps.settings, deps.clock()) if view is not None else None
    if body is None:
        raise NotFound(vm)
    return json_response({"ok": True, vm: body})


@put(
    f"{PREFIX}/vm/{{hostname:str}}",
    summary="Change a VM's lifetime or tags",
    status_code=200,
    description='Body `{"lifetime": <hours since checkout>, "tags": {"<key>": "<value>"}}`.',
    responses=docs(
        s200='{"ok": true}',
        s400='{"ok": false, "failure": [...]} or {"ok": false, "error": ...}',
        s404='{"ok": false}: no such VM',
        s409='{"ok": false, "error": ...}: VM not running',
    ),
)
async def update_vm(hostname: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    s = services_of(request)
    _counted(s, "put.vm.modify")
    vm = shorten_hostname(check(validate_hostname(hostname)))
    pool = await s.vm_ops.locate(vm)
    body = check(parse_json_body(await read_body(request)))
    # Any change needs the owner's token (or an admin's); a lifetime needs a token whatever the VM
    # (as in vmpooler), and both are checked before any failure is reported.
    requester = await authorize(s, request, Target("vm", "update", vm), required="lifetime" in body)
    config = s.settings.config
    update = check(
        parse_vm_update(
            body,
            max_lifetime_upper_limit=config.max_lifetime_upper_limit,
            allowed_tags=config.allowed_tags,
            tagfilter=s.tagfilter,
        )
    )
    meta = requester.meta(s.deps.new_id())
    await s.vm_ops.update(pool, vm, lifetime=update.lifetime, tags=update.tags, meta=meta)
    return json_response(OK)


@delete(
    f"{PREFIX}/vm/{{hostname:str}}",
    summary="Return a checked-out VM",
    status_code=200,
    responses=docs(
        s200='{"ok": true}',
        s400=_HOSTNAME_400,
        s404='{"ok": false}: no such VM, or it is not checked out',
    ),
)
async def return_vm(hostname: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    s = services_of(request)
    _counted(s, "delete.vm.hostname")
    vm = shorten_hostname(check(validate_hostname(hostname)))
    try:
        if s.auth.configured:  # an unknown VM is 404 before any 401
            await s.vm_ops.locate(vm)
        requester = await authorize(s, request, Target("vm", "return", vm), required=False)
        await s.vm_ops.give_back(vm, requester.meta(s.deps.new_id()))
    except NotFound:  # delete.success is counted from the log (projectors.metrics)
        s.deps.metrics.increment("delete.failed")
        raise
    return json_response(OK)


VM_ROUTES = [list_pools, checkout_json, checkout_path, show_vm, update_vm, return_vm]
