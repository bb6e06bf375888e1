"""The simulated provider (vmpooler's ``dummy``): a fake cloud whose inventory lives in Redis.

Every instance built on the same Redis, ``prefix`` and provider ``name`` sees the same VMs, so many worker
processes share one simulated cloud (DESIGN §5). Keys: ``{prefix}:sim:{name}:{{pool}}:vms`` (hash VM name ->
msgspec-JSON :class:`DummyVm`; the ``{pool}`` hash tag keeps a pool in one Cluster slot) and
``{prefix}:sim:{name}:pools`` (set of every pool ever used, for ``purge_unconfigured``). Every write is a
single-key Lua script (create-or-adopt, compare-and-set), so concurrent workers never make two records.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis
from msgspec.structs import replace

from commands.provider import OptionKeys, PoolTarget, ProviderError, VmInfo

__all__ = ["KNOBS", "DummyProvider", "DummyVm", "validate_knobs"]

_OPS = ("createvm", "destroyvm", "createdisk", "createsnapshot", "revertsnapshot", "migratevm")
_TIME_KNOBS = (*(f"{op}_max_time" for op in _OPS), "destroyvm_max_shutdown_time", "boot_time")
_PERCENT_KNOBS = (
    *(f"{op}_fail_percent" for op in _OPS),
    "vmready_fail_percent",
    "migratevm_couldmove_percent",
    "getvm_rename_percent",
    "getvm_poweroff_percent",
)
_INT_KNOBS = ("seed", "quota")
KNOBS: tuple[str, ...] = _TIME_KNOBS + _PERCENT_KNOBS + _INT_KNOBS
"""Every option key the dummy reads; other keys (``provider_class``, ``filename``, ...) are ignored."""

HOSTS = tuple(f"HOST{i}" for i in range(1, 11))

# KEYS[1] pool hash; ARGV vm, record, quota (0 = none) -> {0, existing} adopt, {1, new} created, {2, ''} full.
_CREATE = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {0, existing} end
local quota = tonumber(ARGV[3])
if quota > 0 and redis.call('HLEN', KEYS[1]) >= quota then return {2, ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, ARGV[2]}
"""
# KEYS[1] pool hash; ARGV: vm, expected record, new record ('' = delete). Returns 1 when swapped.
_CAS = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then return redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class DummyVm(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated VM as stored in Redis (also returned by :meth:`DummyProvider.inspect`)."""

    state: Literal["cloning", "running", "off"]
    template: str = ""
    host: str = HOSTS[0]
    ip: str = ""
    hostname: str = ""
    created_at: float = 0.0
    boot_at: float = 0.0
    ready: bool = False
    disks: list[int] = msgspec.field(default_factory=list)
    snapshots: list[str] = msgspec.field(default_factory=list)
    tags: dict[str, str] = msgspec.field(default_factory=dict)


def validate_knobs(options: Mapping[str, Any]) -> dict[str, float]:
    """Return the dummy knobs found in ``options`` as numbers; ``None`` values mean off and are dropped.

    Raises:
        ValueError: naming the knob, when a knob is not a finite non-negative number, a percentage is above
            100, or ``seed``/``quota`` is not an integer.
    """
    knobs: dict[str, float] = {}
    for key in KNOBS:
        value = options.get(key)
        if value is None:
            continue
        wanted = int if key in _INT_KNOBS else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted) or not math.isfinite(value):
            kind = "an integer" if key in _INT_KNOBS else "a number"
            raise ValueError(f"dummy provider knob {key!r} must be {kind}, got {value!r}")
        if value < 0 and key != "seed":
            raise ValueError(f"dummy provider knob {key!r} must not be negative, got {value!r}")
        if key in _PERCENT_KNOBS and value > 100:
            raise ValueError(f"dummy provider knob {key!r} is a percentage (0-100), got {value!r}")
        knobs[key] = value
    return knobs


def _placement(vm: str) -> tuple[str, str]:
    """A fake IP in 10.0.0.0/8 (never contacted) and an initial host, both derived from the name only."""
    digest = hashlib.sha256(vm.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}", HOSTS[digest[3] % len(HOSTS)]


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


class DummyProvider:
    """A simulated VM backend satisfying :class:`commands.provider.Provider`, with vmpooler's dummy knobs.

    Knobs come from ``options``; a pool's ``PoolTarget.options`` may set the same keys, which win. All default
    0/off. ``<op>_max_time`` delays ``<op>`` by uniform random ``[0, max]`` seconds (floats allowed; vmpooler
    waits ``1 + rand(max)`` whole seconds); ``destroyvm_max_shutdown_time`` first powers off a running VM.
    ``<op>_fail_percent`` raises ``ProviderError("Dummy Failure for <knob>")`` with that chance: a failed
    create leaves no VM, a failed destroy leaves it powered off, ``vmready_fail_percent`` raises from
    ``vm_ready`` after boot (the VM stays unready; the next poll rolls again). ``migratevm_couldmove_percent``
    is the chance ``migrate_vm`` moves to another of ``HOST1``..``HOST10``. ``getvm_rename_percent`` /
    ``getvm_poweroff_percent``: chance per ``get_vm`` that the guest hostname becomes ``DUMMY<name>`` / the VM
    powers off (both persist). Ours: ``boot_time`` (seconds from clone completion until ``vm_ready``),
    ``quota`` (max VMs per pool; more raises non-permanent ``ProviderError("quota exceeded ...")``), ``seed``
    (one ``random.Random`` per instance, drawn only for knobs above 0: the same seed and calls give the same
    delays and failures; unset means OS entropy).

    Args:
        name: the provider's name in the config (also part of the Redis keys).
        redis: client on the Redis holding the simulated inventory; owned by the caller.
        prefix: key prefix of this deployment (must not contain ``{``, which would move the hash tag).
        options: the provider's YAML block.
        sleep: awaited for every simulated delay (tests inject a fake).
        clock: wall-clock time source for creation and boot times.

    Raises:
        ValueError: when a knob in ``options`` has the wrong type or range (the message names the knob).
    """

    TYPE = "dummy"
    OPTION_KEYS = OptionKeys(provider=frozenset(KNOBS), pool=frozenset(KNOBS))

    def __init__(
        self,
        name: str,
        redis: aioredis.Redis,
        *,
        prefix: str,
        options: Mapping[str, Any],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._redis = redis
        self._base = f"{prefix}:sim:{name}"
        self._knobs = validate_knobs(options)
        seed = self._knobs.get("seed")
        self._rng = random.Random(None if seed is None else int(seed))
        self._sleep = sleep
        self._clock = clock
        self._create = redis.register_script(_CREATE)
        self._cas = redis.register_script(_CAS)

    async def create_vm(self, pool: PoolTarget, vm: str) -> VmInfo:
        """Clone ``vm`` (visible in the inventory as ``cloning`` at once) or adopt the existing VM,
        finishing it if its clone was left half-made."""
        knobs = self._pool_knobs(pool)
        key, now = self._key(pool.name), self._clock()
        ip, host = _placement(vm)
        record = DummyVm(
            state="cloning", template=pool.template, host=host, ip=ip, hostname=vm, created_at=now
        )
        await self._redis.sadd(f"{self._base}:pools", pool.name)
        status, raw = await self._create(
            keys=[key], args=[vm, msgspec.json.encode(record), int(knobs.get("quota", 0))]
        )
        if int(status) == 0:
            existing = msgspec.json.decode(raw, type=DummyVm)
            if existing.state != "cloning":
                return self._info(vm, existing)
            # Adopt a clone left half-made (say, by a worker that was killed): finish it.
        if int(status) == 2:
            raise ProviderError(f"quota exceeded: pool {pool.name} already holds {int(knobs['quota'])} VMs")
        try:
            await self._delay("createvm_max_time", knobs)
            self._maybe_fail("createvm_fail_percent", knobs)
        except BaseException:  # failed or cancelled: leave no VM behind (unless someone replaced it)
            await self._update(key, vm, lambda r: None if r.state == "cloning" and r.created_at == now else r)
            raise
        boot_at = self._clock() + knobs.get("boot_time", 0.0)
        done = await self._update(
            key, vm, lambda r: replace(r, state="running", boot_at=boot_at) if r.state == "cloning" else r
        )
        if done is None:
            raise ProviderError(f"VM {vm} was destroyed while it was being cloned")
        return self._info(vm, done)

    async def destroy_vm(self, pool: PoolTarget, vm: str) -> None:
        """Power off (``destroyvm_max_shutdown_time``), then delete (``destroyvm_max_time``); gone is fine."""
        knobs, key = self._pool_knobs(pool), self._key(pool.name)
        record = await self._load(pool.name, vm)
        if record is None:
            return
        if record.state == "running":
            await self._delay("destroyvm_max_shutdown_time", knobs)
            await self._update(key, vm, lambda r: replace(r, state="off"))
        await self._delay("destroyvm_max_time", knobs)
        self._maybe_fail("destroyvm_fail_percent", knobs)
        await self._redis.hdel(key, vm)

    async def get_vm(self, pool: PoolTarget, vm: str) -> VmInfo | None:
        """Return the VM, applying ``getvm_poweroff_percent`` and ``getvm_rename_percent`` (persistently)."""
        knobs, key = self._pool_knobs(pool), self._key(pool.name)
        record = await self._load(pool.name, vm)
        if record is not None and record.state == "running" and self._roll("getvm_poweroff_percent", knobs):
            record = await self._update(key, vm, lambda r: replace(r, state="off"))
        if record is not None and record.hostname == vm and self._roll("getvm_rename_percent", knobs):
            record = await self._update(key, vm, lambda r: replace(r, hostname=f"DUMMY{vm}"))
        return None if record is None else self._info(vm, record)

    async def list_vms(self, pool: PoolTarget) -> list[str]:
        """Return the names of every VM of ``pool``, including those still cloning, sorted."""
        return sorted(_bytes(n).decode() for n in await self._redis.hkeys(self._key(pool.name)))

    async def vm_ready(self, pool: PoolTarget, vm: str) -> bool:
        """False while unknown, cloning, off or booting; then rolls ``vmready_fail_percent`` until ready."""
        record = await self._load(pool.name, vm)
        if record is None or record.state != "running":
            return False
        if record.ready:
            return True
        if self._clock() < record.boot_at:
            return False
        self._maybe_fail("vmready_fail_percent", self._pool_knobs(pool))
        done = await self._update(self._key(pool.name), vm, lambda r: replace(r, ready=True))
        return done is not None and done.state == "running"

    async def create_disk(self, pool: PoolTarget, vm: str, size_gb: int) -> None:
        """Record a disk of ``size_gb`` GiB on ``vm``."""
        if size_gb < 1:
            raise ProviderError(f"disk size must be at least 1 GiB, got {size_gb}", permanent=True)
        await self._operate(pool, vm, "createdisk", lambda r: replace(r, disks=[*r.disks, size_gb]))

    async def create_snapshot(self, pool: PoolTarget, vm: str, snapshot: str) -> None:
        """Record the snapshot ``snapshot`` of ``vm`` (taking an existing name again is a no-op)."""
        await self._operate(
            pool,
            vm,
            "createsnapshot",
            lambda r: r if snapshot in r.snapshots else replace(r, snapshots=[*r.snapshots, snapshot]),
        )

    async def revert_snapshot(self, pool: PoolTarget, vm: str, snapshot: str) -> None:
        """Revert ``vm`` to ``snapshot``; a missing snapshot is a permanent ``ProviderError``."""
        record = await self._require(pool.name, vm)
        if snapshot not in record.snapshots:
            raise ProviderError(f"snapshot {snapshot} does not exist on VM {vm}", permanent=True)
        await self._operate(pool, vm, "revertsnapshot", lambda r: r)

    async def migrate_vm(self, pool: PoolTarget, vm: str) -> str:
        """Move ``vm`` with ``migratevm_couldmove_percent`` chance (then delay, failure); return its host."""
        knobs = self._pool_knobs(pool)
        record = await self._require(pool.name, vm)
        if not self._roll("migratevm_couldmove_percent", knobs):
            return record.host
        target = self._rng.choice([h for h in HOSTS if h != record.host])
        done = await self._operate(pool, vm, "migratevm", lambda r: replace(r, host=target))
        return done.host

    async def tag_vm(self, pool: PoolTarget, vm: str, tags: Mapping[str, str]) -> None:
        """Record ``tags`` on ``vm`` (no delay or failure knob)."""
        await self._require(pool.name, vm)
        done = await self._update(self._key(pool.name), vm, lambda r: replace(r, tags={**r.tags, **tags}))
        if done is None:
            raise ProviderError(f"VM {vm} disappeared from pool {pool.name} while being tagged")

    async def purge_unconfigured(self, pools: list[PoolTarget], allowlist: list[str]) -> list[str]:
        """Delete every VM of a pool that is neither in ``pools`` nor (by pool name) in ``allowlist``.

        Deletion is immediate (no delay or failure knobs). Returns the names of the deleted VMs.
        """
        keep = {p.name for p in pools} | set(allowlist)
        deleted: list[str] = []
        known = await self._redis.smembers(f"{self._base}:pools")
        for pool_name in sorted(_bytes(p).decode() for p in known):
            if pool_name in keep:
                continue
            key = self._key(pool_name)
            names = [_bytes(n).decode() for n in await self._redis.hkeys(key)]
            if names:
                await self._redis.hdel(key, *names)
                deleted.extend(sorted(names))
        return deleted

    async def close(self) -> None:
        """Nothing to release: the Redis client belongs to the caller."""

    async def inspect(self, pool: PoolTarget, vm: str) -> DummyVm | None:
        """Return the stored record of ``vm`` (disks, snapshots, state) without any knob applied."""
        return await self._load(pool.name, vm)

    def _key(self, pool: str) -> str:
        return f"{self._base}:{{{pool}}}:vms"

    def _pool_knobs(self, pool: PoolTarget) -> dict[str, float]:
        try:
            return {**self._knobs, **validate_knobs(pool.options)}
        except ValueError as exc:
            raise ProviderError(f"pool {pool.name}: {exc}", permanent=True) from exc

    def _roll(self, knob: str, knobs: Mapping[str, float]) -> bool:
        percent = knobs.get(knob, 0.0)
        return percent > 0 and self._rng.random() * 100 < percent

    def _maybe_fail(self, knob: str, knobs: Mapping[str, float]) -> None:
        if self._roll(knob, knobs):
            raise ProviderError(f"Dummy Failure for {knob}")

    async def _delay(self, knob: str, knobs: Mapping[str, float]) -> None:
        if knobs.get(knob, 0.0) > 0:
            await self._sleep(self._rng.uniform(0.0, knobs[knob]))

    async def _operate(
        self, pool: PoolTarget, vm: str, op: str, change: Callable[[DummyVm], DummyVm]
    ) -> DummyVm:
        knobs = self._pool_knobs(pool)
        await self._require(pool.name, vm)
        await self._delay(f"{op}_max_time", knobs)
        self._maybe_fail(f"{op}_fail_percent", knobs)
        done = await self._update(self._key(pool.name), vm, change)
        if done is None:
            raise ProviderError(f"VM {vm} disappeared from pool {pool.name} during {op}")
        return done

    async def _load(self, pool: str, vm: str) -> DummyVm | None:
        raw = await self._redis.hget(self._key(pool), vm)
        return None if raw is None else msgspec.json.decode(raw, type=DummyVm)

    async def _require(self, pool: str, vm: str) -> DummyVm:
        record = await self._load(pool, vm)
        if record is None:
            raise ProviderError(
                f"VM {vm} does not exist in pool {pool} for the provider {self.name}", permanent=True
            )
        return record

    async def _update(self, key: str, vm: str, change: Callable[[DummyVm], DummyVm | None]) -> DummyVm | None:
        """Apply ``change`` by compare-and-set (retrying on a concurrent write); ``None`` deletes the VM."""
        while True:
            raw = await self._redis.hget(key, vm)
            if raw is None:
                return None
            new = change(msgspec.json.decode(raw, type=DummyVm))
            encoded = b"" if new is None else msgspec.json.encode(new)
            if encoded == _bytes(raw) or int(await self._cas(keys=[key], args=[vm, _bytes(raw), encoded])):
                return new

    def _info(self, vm: str, record: DummyVm) -> VmInfo:
        return VmInfo(
            name=vm,
            hostname=record.hostname,
            ip=record.ip,
            host=record.host,
            powered_on=record.state == "running",
            template=record.template,
        )
