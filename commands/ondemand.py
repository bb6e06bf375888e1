"""On-demand requests (vmpooler's ``/ondemandvm``): accepted and cancelled by the API, provisioned
and settled by the manager, each step one decision script in one slot.

The request lives in the control slot (``ondemand.*`` events, status ``pending`` -> ``fulfilled`` |
``failed`` | ``cancelled``); each (requested name, pool) slice lives in its pool's slot, where the
pool's scripts clone for it within ``ondemand_clone_limit``, retry lost clones, and hand booted VMs
to it. The manager connects the two: it opens the slices of pending requests, fails or fulfils a
request from its slices' progress, fails it when its TTL runs out, and closes the slices of settled
requests (destroying the VMs of failed and cancelled ones). Every step is idempotent, so a step
repeated after a crash or a lease hand-over does no harm.

Settling a request reads its slices' progress in other slots before the control script appends
the verdict; that is safe because a slice's delivered count and failure only ever grow while it is
open, and the control script re-checks that the request is still pending: a stale read can only
delay a verdict, never make it wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import msgspec

from events import (
    CONTROL,
    Keys,
    OndemandAccepted,
    OndemandCancelled,
    OndemandFailed,
    OndemandFulfilled,
    OndemandReleased,
    PoolOndemandRequested,
)
from events.od_fold import slice_id
from events.streams import text

from .checkout import CheckoutService, Requester
from .errors import ConflictError, NotFound
from .pool import Meta, PoolCommands
from .settings import Settings

__all__ = ["PERMANENT_PATTERNS", "OndemandService", "is_permanent_error"]

PERMANENT_PATTERNS = re.compile(
    "|".join(
        (
            r"template.*not found",
            r"template.*does not exist",
            r"invalid.*path",
            r"folder.*not found",
            r"datastore.*not found",
            r"resource pool.*not found",
            r"permission.*denied",
            r"authentication.*failed",
            r"invalid.*credentials",
            r"configuration.*error",
        )
    ),
    re.IGNORECASE,
)
"""vmpooler's messages of clone errors that no retry can fix."""


def is_permanent_error(message: str, error_class: str = "", *, flagged: bool = False) -> bool:
    """Whether a clone error is permanent: flagged by the provider (``ProviderError.permanent``),
    a programming error class, or a message matching :data:`PERMANENT_PATTERNS`."""
    return (
        flagged
        or error_class in {"TypeError", "AttributeError", "NameError"}
        or bool(PERMANENT_PATTERNS.search(message or ""))
    )


_accepted = msgspec.json.Decoder(OndemandAccepted)
_TERMINAL = frozenset({"fulfilled", "failed", "cancelled"})


class OndemandService:
    """Application service of on-demand requests.

    Args:
        settings: the configuration (limits, lifetimes, aliases).
        commands: the atomic decisions.
        checkout: whose backend choice (aliases, ``backend_weight``) picks each VM's pool.
    """

    def __init__(self, settings: Settings, commands: PoolCommands, checkout: CheckoutService) -> None:
        self.settings = settings
        self.commands = commands
        self.keys: Keys = commands.keys
        self._checkout = checkout
        root = self.keys.base(CONTROL)
        self._status, self._work, self._req = f"{root}:od:status", f"{root}:od:work", f"{root}:od:req"

    # --- the API side ---------------------------------------------------------------------------

    def plan(self, wanted: Sequence[tuple[str, int]]) -> dict[str, dict[str, int]]:
        """Choose a pool per instance (as a checkout would); returns name -> pool -> count."""
        slices: dict[str, dict[str, int]] = {}
        for name, count in wanted:
            candidates = self.settings.candidates(name)
            pools = slices.setdefault(name, {})
            for _ in range(count):
                pool = self._checkout.order(name, candidates)[0]  # the checkout's choice, first pick
                pools[pool] = pools.get(pool, 0) + 1
        return slices

    async def accept(
        self, request_id: str, slices: dict[str, dict[str, int]], requester: Requester | None, meta: Meta
    ) -> None:
        """Record a new request.

        Raises:
            ConflictError: a request with this id exists already.
        """
        config = self.settings.config
        lifetime = config.vm_lifetime
        user = token = ""
        if requester is not None and requester.token_hash:
            lifetime, user, token = (
                config.vm_lifetime_auth or config.vm_lifetime,
                requester.user,
                requester.token_hash,
            )
        event = OndemandAccepted(
            request_id=request_id,
            slices=slices,
            lifetime=lifetime,
            token_user=user,
            token_hash=token,
            ttl_ms=config.ondemand_request_ttl * 60_000,
            max_retries=config.max_vm_retries,
        )
        appended, _ = await self.commands.control(request_id, event, meta)
        if not appended:
            raise ConflictError(f"request_id '{request_id}' has already been created")

    async def owner(self, request_id: str) -> str | None:
        """The token hash the request was made with (``""``: none), or ``None`` if it is unknown."""
        raw = await self.commands.redis.hget(self._req, request_id)
        return None if raw is None else _accepted.decode(raw).token_hash

    async def cancel(self, request_id: str, meta: Meta) -> bool:
        """Cancel a request (its VMs are then destroyed by the manager).

        Returns:
            True if cancelled now, False if it was cancelled before.

        Raises:
            NotFound: no such request.
        """
        appended, before = await self.commands.control(
            request_id, OndemandCancelled(request_id=request_id), meta
        )
        if not before:
            raise NotFound(f"no request found for request_id '{request_id}'")
        return appended

    # --- the manager side -----------------------------------------------------------------------

    async def tick(self, actor: str, limit: int = 100) -> int:
        """Fail expired requests, then advance every request the manager has work on; returns how
        many request events were appended (besides the pool events)."""
        done = len(await self.commands.control_fire(Meta(actor, "ondemand-ttl"), limit))
        raw = cast(list[bytes], await self.commands.redis.zrange(self._work, 0, limit - 1))
        rids = [text(r) for r in raw]
        if not rids:
            return done
        async with self.commands.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._status, rids)
            pipe.hmget(self._req, rids)
            statuses, bodies = await pipe.execute()
        for rid, status, body in zip(rids, statuses, bodies, strict=True):
            if body is not None:
                done += await self._advance(rid, text(status), _accepted.decode(body), Meta(actor, rid))
        return done

    def keep_ms(self, status: str) -> int:
        """How long a settled request stays known, as vmpooler keeps its request hashes: 30 days
        once fulfilled, 15 days once deleted, ``:redis: data_ttl`` hours once failed."""
        if status == "fulfilled":
            return 30 * 86_400_000
        if status == "cancelled":
            return 15 * 86_400_000
        return self.settings.redis.data_ttl * 3_600_000

    async def _advance(self, rid: str, status: str, req: OndemandAccepted, meta: Meta) -> int:
        done = 0
        if status == "pending":
            settled = await self._progress(rid, req, meta)
            if settled is None:
                return 0
            appended, _ = await self.commands.control(rid, settled, meta)
            if not appended:
                return 0  # cancelled meanwhile: the next tick releases it as cancelled
            done += 1
            status = "failed" if isinstance(settled, OndemandFailed) else "fulfilled"
        if status in _TERMINAL:
            for pool in dict.fromkeys(p for pools in req.slices.values() for p in pools):
                await self.commands.ondemand_close(pool, rid, status, meta)
            released = OndemandReleased(request_id=rid, status=status, keep_ms=self.keep_ms(status))
            appended, _ = await self.commands.control(rid, released, meta)
            done += int(appended)
        return done

    async def _progress(
        self, rid: str, req: OndemandAccepted, meta: Meta
    ) -> OndemandFailed | OndemandFulfilled | None:
        """Open the request's slices (no-op when open) and read their progress: a failed slice
        fails the request; all slices delivered fulfil it."""
        complete = True
        for name, pool, count in ((n, p, c) for n, pools in req.slices.items() for p, c in pools.items()):
            opened = PoolOndemandRequested(
                request_id=rid,
                requested_as=name,
                count=count,
                lifetime=req.lifetime,
                token_user=req.token_user,
                token_hash=req.token_hash,
                max_retries=req.max_retries,
            )
            await self.commands.ondemand_open(pool, opened, meta)
            sid = slice_id(rid, name)
            delivered, failure = cast(
                list[bytes | None],
                await self.commands.redis.hmget(f"{self.keys.base(pool)}:odn", [f"d:{sid}", f"f:{sid}"]),
            )
            if failure is not None:
                return OndemandFailed(request_id=rid, reason=text(failure))
            complete = complete and int(delivered or 0) >= count
        return OndemandFulfilled(request_id=rid) if complete else None
