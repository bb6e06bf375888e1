"""Who may write what: the one gate every write endpoint goes through (:func:`authorize`).

* a VM checked out with a token may be changed (returned, retagged, given a lifetime, a disk, a
  snapshot or a revert) only with that token or an admin's;
* an on-demand request made with a token is cancelled only with that token or an admin's;
* pool control (``/config/...``, ``/poolreset``) needs a valid token, and an admin's when
  ``:auth: admins`` is set (403 otherwise);
* something new (a checkout, an on-demand request) needs only a valid token where one is required.

It returns the :class:`Requester`, which the handler carries down to its ``PoolCommands`` call
(``requester.meta(...)``), so the events name the user and a decision script can later check the
owner itself. Until then the owner is read from the projections (which can lag; DESIGN §3).

A refused attempt is recorded as a ``*.refused`` event on the stream of the thing refused (the VM's
pool, each pool named, or the control stream for a request), at most one per requester, target and
:data:`REFUSAL_WINDOW_MS` (a ``SET NX PX`` key), so a client cannot grow the log at will.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request

from commands.checkout import ANONYMOUS, Requester
from commands.errors import NotFound, Unauthorized
from events import CONTROL, ControlChangeRefused, PoolChangeRefused, VmChangeRefused
from web._deps import Services
from web.errors import Forbidden

__all__ = ["REFUSAL_WINDOW_MS", "Target", "authorize"]

log = logging.getLogger(__name__)

REFUSAL_WINDOW_MS = 60_000
"""At most one refused-attempt event per requester and target in this window."""

AnyRequest = Request[Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Target:
    """What a write changes.

    Attributes:
        kind: a VM, an on-demand request, pools' configuration, or something new.
        action: what is tried (``return``, ``update``, ``disk``, ``snapshot``, ``revert``,
            ``cancel``, ``poolsize``, ``pooltemplate``, ``clonetarget``, ``poolreset``).
        name: the VM's name or the request's id (empty for pools).
        pools: the pools changed (for pools only).
    """

    kind: Literal["vm", "request", "pools", "new"]
    action: str
    name: str = ""
    pools: tuple[str, ...] = ()


async def authorize(s: Services, request: AnyRequest, target: Target, *, required: bool) -> Requester:
    """The requester of the write ``target``, if it may make it.

    Args:
        required: a valid token is needed whatever the target's owner (vmpooler's ``need_token!``).

    Raises:
        Unauthorized: a token is required and missing or invalid, or the target has an owner's
            token and the request carries neither it nor an admin's.
        Forbidden: pool control while ``:auth: admins`` is set, by someone not among them.
    """
    try:
        requester = await s.auth.requester(request, required=required)
    except Unauthorized as exc:
        if required or target.kind == "new":  # a checkout with a bad token is refused, as vmpooler
            await _refused(s, request, ANONYMOUS, target, 401, str(exc))
            raise
        requester = None  # an invalid token identifies nobody: fine on a VM that has no owner
    if not s.auth.configured or target.kind == "new":
        return requester or ANONYMOUS
    if target.kind == "pools":
        admins = s.settings.auth.admins if s.settings.auth is not None else ()
        if admins and (requester is None or not requester.admin):
            await _refused(s, request, requester or ANONYMOUS, target, 403, "only admins may change pools")
            raise Forbidden("only admins may change pools")
        return requester or ANONYMOUS
    owner = await _owner(s, target)
    if owner and (requester is None or (requester.token_hash != owner and not requester.admin)):
        reason = (
            f"the {'VM was checked out' if target.kind == 'vm' else 'request was made'} with another token"
        )
        await _refused(s, request, requester or ANONYMOUS, target, 401, reason)
        raise Unauthorized(reason)
    return requester or ANONYMOUS


async def _owner(s: Services, target: Target) -> str:
    """The token hash the target was made with (``""``: none, or unknown)."""
    if not target.name:
        return ""
    if target.kind == "request":
        return await s.ondemand.owner(target.name) or ""
    view = await s.deps.reads.vm(target.name)
    return view.token_hash if view is not None else ""


async def _refused(
    s: Services, request: AnyRequest, requester: Requester, target: Target, status: int, reason: str
) -> None:
    """Record the refused attempt (bounded; never changes the answer, so failures are only logged)."""
    client = request.client.host if request.client is not None else ""
    who = requester.user or f"anonymous@{client}"
    fields: dict[str, Any] = {"action": target.action, "status": status, "user": requester.user}
    fields |= {"client": client, "reason": reason}
    try:
        for stream in await _streams(s, target):
            if not await _first_in_window(s, who, stream, target.name):
                continue
            meta = requester.meta(s.deps.new_id())
            if target.kind == "request":
                event = ControlChangeRefused(request_id=target.name, **fields)
                await s.deps.commands.control(target.name, event, meta)
            elif target.kind == "vm":
                await s.deps.commands.append(stream, [(target.name, VmChangeRefused(**fields))], meta)
            else:
                await s.deps.commands.append(stream, [("", PoolChangeRefused(**fields))], meta)
    except Exception:
        log.warning("could not record a refused %s of %r", target.action, target.name, exc_info=True)


async def _streams(s: Services, target: Target) -> tuple[str, ...]:
    """Where the refusal goes: the request's control stream, the pools, or the VM's pool; nowhere
    for a target that does not exist (so made-up names cannot grow the log)."""
    if target.kind == "request":  # only a request that exists: ids are the client's to make up
        return (CONTROL,) if await s.ondemand.owner(target.name) is not None else ()
    if target.kind != "vm":
        return target.pools  # none for something new
    try:
        return (await s.vm_ops.locate(target.name),) if target.name else ()
    except NotFound:
        return ()


async def _first_in_window(s: Services, who: str, stream: str, name: str) -> bool:
    digest = hashlib.sha256(f"{who}\0{stream}\0{name}".encode()).hexdigest()[:32]
    key = f"{s.deps.keys.prefix}:refused:{digest}"
    return bool(await s.deps.redis.set(key, b"1", nx=True, px=REFUSAL_WINDOW_MS))
