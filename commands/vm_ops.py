"""Operations on one VM named by a client: give it back (DELETE), change its lifetime or tags (PUT)."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from events import Event, Keys, VmLifetimeChanged, VmReturned, VmTagged

from .errors import ConflictError, NotFound, Refused
from .pool import Meta, PoolCommands

__all__ = ["VmOps"]


class VmOps:
    """Application services for ``DELETE`` and ``PUT /vm/<hostname>``.

    The VM's pool comes from the name registry (``keys.names()``): every VM name is reserved there
    before its first event, so it also answers "does this VM exist".

    Args:
        redis: client (bytes replies).
        keys: key names of this installation.
        commands: the pools' atomic decisions.
    """

    def __init__(self, redis: Redis, keys: Keys, commands: PoolCommands) -> None:
        self._redis = redis
        self._keys = keys
        self._commands = commands

    async def locate(self, vm: str) -> str:
        """Return the pool of ``vm``.

        Raises:
            NotFound: no VM of that name was ever created.
        """
        raw = cast("bytes | None", await self._redis.hget(self._keys.names(), vm))
        if raw is None:
            raise NotFound(f"no VM named {vm!r}")
        return raw.decode()

    async def give_back(self, vm: str, meta: Meta) -> str:
        """The client returns a checked-out VM (it goes to completed, then is destroyed).

        Returns:
            The VM's pool.

        Raises:
            NotFound: the VM does not exist, or is not checked out. vmpooler's intent (its spec) is
                404 for a VM that is not running; its production code answers 200 and destroys
                even ready VMs, a redis-rb 5 truthiness bug we do not reproduce.
        """
        pool = await self.locate(vm)
        try:
            await self._commands.append(pool, [(vm, VmReturned())], meta)
        except Refused as exc:
            raise NotFound(f"VM {vm!r} is not checked out (it is {exc.state or 'gone'})") from None
        return pool

    async def update(
        self, pool: str, vm: str, *, lifetime: int | None, tags: dict[str, str], meta: Meta
    ) -> None:
        """Set the VM's lifetime (total hours since checkout) and/or tags, in one atomic append.

        ``tags`` are stored as given: the caller has already validated them and applied
        ``:tagfilter:`` (``web.validation.parse_vm_update``), and dropped empty values.

        Raises:
            NotFound: the VM is gone (destroyed or vanished).
            ConflictError: the VM's state does not allow the change (a lifetime is only kept while
                the VM is checked out).
        """
        events: list[tuple[str, Event]] = []
        if lifetime is not None:
            events.append((vm, VmLifetimeChanged(hours=lifetime)))
        if tags:
            events.append((vm, VmTagged(tags=tags)))
        if not events:
            return
        try:
            await self._commands.append(pool, events, meta)
        except Refused as exc:
            if not exc.state:
                raise NotFound(f"VM {vm!r} no longer exists") from None
            raise ConflictError(
                f"VM {vm} is {exc.state}; its lifetime can only change while it is running"
            ) from None
