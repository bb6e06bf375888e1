"""``/api/v3/vm/<hostname>/disk|snapshot``: ask for a disk, a snapshot or a revert (vmpooler §1.2).

The API only appends the request event; the worker performs it through the provider and appends
the outcome (``VmDiskAdded``, ``VmSnapshotTaken``, ``VmReverted`` or ``VmTaskFailed``).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from litestar import Request, Response, post
from litestar.params import FromPath

from commands.checkout import Requester
from commands.errors import NotFound, Refused
from events import Event, VmDiskRequested, VmRevertRequested, VmSnapshotRequested
from web._access import Target, authorize
from web._deps import Services, services_of
from web._json import OK, json_response
from web.errors import check
from web.routes_vm import PREFIX, docs
from web.validation import shorten_hostname, validate_disk_size, validate_hostname

__all__ = ["TASK_ROUTES", "snapshot_name"]

_ALPHABET = string.ascii_lowercase + string.digits
_FIRST = string.ascii_lowercase[:25]  # vmpooler: o[rand(25)], so a..y


def snapshot_name() -> str:
    """A new snapshot name in vmpooler's token alphabet: 32 chars of ``[a-z0-9]``, the first ``a``-``y``."""
    return secrets.choice(_FIRST) + "".join(secrets.choice(_ALPHABET) for _ in range(31))


async def _ask(s: Services, requester: Requester, pool: str, vm: str, event: Event) -> None:
    try:
        await s.deps.commands.append(pool, [(vm, event)], requester.meta(s.deps.new_id()))
    except Refused as exc:
        # vmpooler queues the task whatever the VM's state (it fails later); we refuse at once.
        raise NotFound(f"VM {vm!r} is {exc.state or 'gone'}") from None


@post(
    f"{PREFIX}/vm/{{hostname:str}}/disk/{{size:str}}",
    summary="Add a disk to a VM",
    status_code=202,
    responses=docs(
        s202='{"ok": true, "<vm>": {"disk": "+<size>gb"}}',
        s400='{"ok": false, "error": "<why>"}: malformed hostname or size (1..2048)',
        s404='{"ok": false}: no such VM, or it is not booting, ready or running',
    ),
)
async def add_disk(
    hostname: FromPath[str], size: FromPath[str], request: Request[Any, Any, Any]
) -> Response[bytes]:
    s = services_of(request)
    s.deps.metrics.increment("http_requests_vm_total.post.vm.disksize")
    # A token first, as vmpooler; a VM checked out with a token accepts only that token or an
    # admin's (vmpooler lets any token act on any VM).
    requester = await authorize(s, request, Target("vm", "disk", shorten_hostname(hostname)), required=True)
    vm = shorten_hostname(check(validate_hostname(hostname)))
    gb = check(validate_disk_size(size))
    await _ask(s, requester, await s.vm_ops.locate(vm), vm, VmDiskRequested(size_gb=gb))
    return json_response({"ok": True, vm: {"disk": f"+{gb}gb"}}, 202)


@post(
    f"{PREFIX}/vm/{{hostname:str}}/snapshot",
    summary="Snapshot a VM",
    status_code=202,
    responses=docs(
        s202='{"ok": true, "<vm>": {"snapshot": "<name>"}}',
        s404='{"ok": false}: no such VM, or it is not booting, ready or running',
    ),
)
async def take_snapshot(hostname: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    s = services_of(request)
    s.deps.metrics.increment("http_requests_vm_total.post.vm.snapshot")
    vm = shorten_hostname(hostname)  # vmpooler does not validate hostnames here; unknown ones are 404
    requester = await authorize(s, request, Target("vm", "snapshot", vm), required=True)
    pool = await s.vm_ops.locate(vm)
    name = snapshot_name()
    await _ask(s, requester, pool, vm, VmSnapshotRequested(name=name))
    return json_response({"ok": True, vm: {"snapshot": name}}, 202)


@post(
    f"{PREFIX}/vm/{{hostname:str}}/snapshot/{{snapshot:str}}",
    summary="Revert a VM to a snapshot",
    status_code=202,
    responses=docs(
        s202='{"ok": true}',
        s404='{"ok": false}: no such VM or snapshot, or the VM is not booting, ready or running',
    ),
)
async def revert_snapshot(
    hostname: FromPath[str], snapshot: FromPath[str], request: Request[Any, Any, Any]
) -> Response[bytes]:
    s = services_of(request)
    vm = shorten_hostname(hostname)
    requester = await authorize(s, request, Target("vm", "revert", vm), required=True)
    view = await s.deps.reads.vm(vm) if vm else None
    if view is None or snapshot not in view.snapshots:
        raise NotFound(f"VM {vm!r} has no snapshot {snapshot!r}")
    await _ask(s, requester, view.pool, vm, VmRevertRequested(name=snapshot))
    return json_response(OK, 202)


TASK_ROUTES = [add_disk, take_snapshot, revert_snapshot]
