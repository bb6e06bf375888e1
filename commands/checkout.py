"""Checkout across pools, all or none: vmpooler's ``atomically_allocate_vms`` over atomic decisions.

One HTTP request asks for ``[(requested name, count), ...]``; each name is a pool or an alias. Every
VM of the request is taken by a decision script (``PoolCommands.checkout``), so no VM is ever handed
out twice; when some VM cannot be had, the VMs already taken go back to ready with compensating
``VmCheckoutReverted`` events and the request fails with :class:`~commands.errors.QuotaError`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from events import PoolCheckoutFailed, VmCheckedOut, VmCheckoutReverted

from .errors import NotFound, QuotaError, Refused
from .pool import Meta, PoolCommands
from .settings import Settings

__all__ = ["ANONYMOUS", "CheckoutService", "RequestMeta", "Requester", "Taken"]

log = logging.getLogger(__name__)

Taken = tuple[str, str]
"""One handed-out VM: ``(pool, vm name)``."""


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks for a change through the API. Every write path carries it down to the
    :class:`PoolCommands` call it makes, inside a :class:`RequestMeta`.

    Attributes:
        user: the token's user, recorded on the VM (``token:user`` in vmpooler); empty: anonymous.
        token_hash: hash of the validated ``X-AUTH-TOKEN``; empty when no valid token was sent.
        admin: whether ``user`` is one of ``:auth: admins``.
    """

    user: str = ""
    token_hash: str = ""
    admin: bool = False

    @property
    def actor(self) -> str:
        """The envelope's actor of the events this requester causes: ``api:<user>``, or ``api``."""
        return f"api:{self.user}" if self.user else "api"

    def meta(self, correlation_id: str = "", causation_id: str = "") -> RequestMeta:
        """The metadata of a command this requester asks for."""
        return RequestMeta(self, correlation_id, causation_id)


ANONYMOUS = Requester()
"""A request without a (valid) token, or any request when auth is off."""


class RequestMeta(Meta):
    """:class:`Meta` of a command a client asked for; it carries the :class:`Requester` to the
    :class:`PoolCommands` call, where a decision script can check the VM's owner against it."""

    __slots__ = ("requester",)

    def __init__(self, requester: Requester, correlation_id: str = "", causation_id: str = "") -> None:
        super().__init__(requester.actor, correlation_id, causation_id)
        self.requester = requester


class CheckoutService:
    """Hands out VMs for one request, all or none.

    Args:
        settings: the configuration (pools, aliases, backend weights, lifetimes).
        commands: the pools' atomic decisions.
        rng: randomness for the backend choice among an alias's pools (seed it in tests).
    """

    def __init__(
        self, settings: Settings, commands: PoolCommands, *, rng: random.Random | None = None
    ) -> None:
        self._settings = settings
        self._commands = commands
        self._rng = rng or random.Random()
        # Requested name -> backend weights (or None): computed once per name, never per request.
        self._weights: dict[str, tuple[int, ...] | None] = {}

    async def checkout(
        self,
        wanted: Sequence[tuple[str, int]],
        *,
        correlation_id: str,
        requester: Requester | None = None,
    ) -> dict[str, list[Taken]]:
        """Take ``count`` VMs for every ``(requested name, count)``, all or none.

        Args:
            wanted: requested pool or alias names with counts, in request order.
            correlation_id: shared by every event of this request.
            requester: the authenticated requester, or ``None`` (anonymous).

        Returns:
            Requested name -> the ``(pool, vm)`` pairs handed out for it, in request order.

        Raises:
            NotFound: nothing was requested, or a name is neither a pool nor an alias (nothing taken).
            QuotaError: some VM could not be had; every VM taken for the request went back to ready.
        """
        if not wanted:
            raise NotFound("no pool requested")
        unknown = [name for name, _ in wanted if not self._settings.candidates(name)]
        if unknown:
            raise NotFound(f"unknown pool or alias: {', '.join(unknown)}")
        meta = self._meta(correlation_id, requester)
        taken: list[tuple[str, str, str]] = []  # (requested, pool, vm), appended as soon as taken
        try:
            for name, count in wanted:
                event = self._event(name, requester)
                got = await self._take(name, count, event, meta, taken)
                if got < count:
                    failed = PoolCheckoutFailed(requested_as=name, wanted=count, got=got)
                    await self._commands.append(self._settings.candidates(name)[0], [("", failed)], meta)
                    raise QuotaError(f"not enough ready VMs for {name!r} ({got} of {count})")
        except BaseException:
            await self._give_back([(pool, vm) for _, pool, vm in taken], meta)
            raise
        result: dict[str, list[Taken]] = {}
        for name, pool, vm in taken:
            result.setdefault(name, []).append((pool, vm))
        return result

    def _meta(self, correlation_id: str, requester: Requester | None) -> Meta:
        return (requester or ANONYMOUS).meta(correlation_id)

    def _event(self, name: str, requester: Requester | None) -> VmCheckedOut:
        config = self._settings.config
        # As in vmpooler, a token only counts when auth is configured; then it sets the VM's user and
        # vm_lifetime_auth (when set and > 0). Without auth tokens are ignored.
        if self._settings.auth is not None and requester is not None and requester.token_hash:
            lifetime = config.vm_lifetime_auth or config.vm_lifetime
            return VmCheckedOut(
                lifetime=lifetime,
                requested_as=name,
                token_user=requester.user,
                token_hash=requester.token_hash,
            )
        return VmCheckedOut(lifetime=config.vm_lifetime, requested_as=name)

    async def _take(
        self, name: str, count: int, event: VmCheckedOut, meta: Meta, sink: list[tuple[str, str, str]]
    ) -> int:
        """Take up to ``count`` VMs for ``name``; returns how many were taken (all recorded in ``sink``)."""
        candidates = self._settings.candidates(name)
        if len(candidates) == 1:
            return await self._claim(name, candidates[0], count, event, meta, sink)
        # vmpooler chooses the backend per VM; VMs whose first choice is the same pool are taken in one
        # decision, and only VMs of a first choice that could not serve them all fall back one by one.
        orders = [self.order(name, candidates) for _ in range(count)]
        got = 0
        retry: list[tuple[str, ...]] = []
        empty: set[str] = set()
        for pool in candidates:
            mine = [order for order in orders if order[0] == pool]
            if not mine:
                continue
            n = await self._claim(name, pool, len(mine), event, meta, sink)
            got += n
            if n == 0:
                retry.extend(mine)
        for order in retry:
            for pool in order:
                if pool in empty:
                    continue
                if await self._claim(name, pool, 1, event, meta, sink):
                    got += 1
                    break
                empty.add(pool)
            else:
                return got
        return got

    async def _claim(
        self, name: str, pool: str, n: int, event: VmCheckedOut, meta: Meta, sink: list[tuple[str, str, str]]
    ) -> int:
        vms = await self._commands.checkout(pool, n, event, meta)
        sink.extend((name, pool, vm) for vm in vms)
        return len(vms)

    def order(self, name: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
        """One VM's backend order (what a checkout of ``name`` tries, and what an on-demand request
        clones from: the first): a first choice (weighted if every candidate has a weight, else
        uniform), then the other candidates in configured order as fallbacks."""
        weights = self._weights_of(name, candidates)
        if weights is not None:
            first = self._rng.choices(candidates, weights)[0]
        else:
            first = self._rng.choice(candidates)
        return (first, *(pool for pool in candidates if pool != first))

    def _weights_of(self, name: str, candidates: tuple[str, ...]) -> tuple[int, ...] | None:
        if name not in self._weights:
            config = self._settings.config
            weights: list[int] = []
            for pool in candidates:
                settings = self._settings.pool(pool)
                target = (settings.clone_target if settings is not None else "") or config.clone_target
                weight = config.backend_weight.get(target)
                if weight is None:
                    break
                weights.append(weight)
            complete = len(weights) == len(candidates) and sum(weights) > 0
            # All weights zero cannot be drawn from; vmpooler's intent then is "no preference".
            self._weights[name] = tuple(weights) if complete else None
        return self._weights[name]

    async def _give_back(self, taken: Sequence[Taken], meta: Meta) -> None:
        """Compensate: every VM taken for a failed request goes back to ready (best effort, logged)."""
        by_pool: dict[str, list[str]] = {}
        for pool, vm in taken:
            by_pool.setdefault(pool, []).append(vm)
        for pool, vms in by_pool.items():
            try:
                await self._commands.append(pool, [(vm, VmCheckoutReverted()) for vm in vms], meta)
            except Refused:
                # One of them left "running" meanwhile (returned, expired); revert the others one by one.
                for vm in vms:
                    await self._revert_one(pool, vm, meta)
            except Exception:
                log.exception("could not return %d VMs of pool %s to ready", len(vms), pool)

    async def _revert_one(self, pool: str, vm: str, meta: Meta) -> None:
        try:
            await self._commands.append(pool, [(vm, VmCheckoutReverted())], meta)
        except Refused as exc:
            log.warning("not returning %s (pool %s) to ready: it is %s", vm, pool, exc.state or "gone")
        except Exception:
            log.exception("could not return %s (pool %s) to ready", vm, pool)
