"""History series for the dashboard: per pool, one point per minute (and a coarser one per hour).

A point holds the pool's ready and running counts at the end of its minute (gauges) and what
happened in it (counters): checkouts, checkout failures, clones and their total seconds, boots and
their total seconds. Points are grouped in buckets, one Redis key each: an hour of minute points
(``<rm:history>:m:<hour>``) and a day of hour points (``<rm:history>:h:<day>``), where ``<hour>``
and ``<day>`` count from the epoch. A bucket also records ``open``, the gauges just before its
first point, so a reader can fill the minutes without events.

Checkout failures: ``pool.checkout-failed``, one per refused request name (vmpooler's 503), in the
stream of the name's first candidate pool. A VM claimed for a refused request and handed back
(``vm.checkout-reverted``) takes back its checkout.

Times are event times. A point's minute is ``max(event time, latest event time folded)``, so a
late event (another process's clock) never rewrites a past minute. Retention is by event time too
(buckets older than the newest by more than the retention are deleted when a newer bucket is
started), so the fold is pure and a rebuild from the log gives the same keys and bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

import events as ev
from events import Keys, Recorded
from events.lifecycle import SAME, TRANSITIONS
from events.streams import text

from ._tx import Tx

__all__ = [
    "MINUTE_MS",
    "Bucket",
    "History",
    "HistoryState",
    "Point",
    "Resolution",
]

MINUTE_MS = 60_000
_GAUGED = ("ready", "running")


class Point(msgspec.Struct, array_like=True):
    """One minute (or hour) of one pool. Gauges are the counts at its end; the rest are sums."""

    ready: int = 0
    running: int = 0
    checkouts: int = 0
    failures: int = 0
    clones: int = 0
    clone_s: float = 0.0
    boots: int = 0
    boot_s: float = 0.0


class Bucket(msgspec.Struct):
    """The points of one bucket by offset in it (minute of the hour, or hour of the day).

    ``open`` is ``[ready, running]`` just before the bucket's first point.
    """

    open: tuple[int, int]
    pts: dict[int, Point] = msgspec.field(default_factory=dict)


class HistoryState(msgspec.Struct, kw_only=True):
    """The pool's current gauges, the latest event time folded and the latest bucket of each kind."""

    ready: int = 0
    running: int = 0
    last_at: int = 0
    buckets: dict[str, int] = msgspec.field(default_factory=dict)


class Resolution(msgspec.Struct, frozen=True, kw_only=True):
    """One granularity: ``unit_ms`` per point, ``per`` points per bucket, ``keep`` buckets kept."""

    kind: str
    unit_ms: int
    per: int
    keep: int

    def key(self, keys: Keys, pool: str, bucket: int) -> str:
        return f"{keys.read_model(pool, History.name)}:{self.kind}:{bucket}"


class History:
    """Keeps the minute and hour series of each pool (see the module).

    Args:
        minute_hours: hours of minute points kept (default 25: always a full day).
        hour_days: days of hour points kept (default 30).
    """

    name = "history"

    def __init__(self, *, minute_hours: int = 25, hour_days: int = 30) -> None:
        if minute_hours < 1 or hour_days < 1:
            raise ValueError("history retention must keep at least one bucket of each kind")
        self.minute = Resolution(kind="m", unit_ms=MINUTE_MS, per=60, keep=minute_hours)
        self.hour = Resolution(kind="h", unit_ms=3_600_000, per=24, keep=hour_days)

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    @staticmethod
    def state_key(keys: Keys, pool: str) -> str:
        return keys.read_model(pool, History.name)

    @staticmethod
    def states_key(keys: Keys, pool: str) -> str:
        """Hash VM → ``ready`` or ``running``, for the VMs in one of the gauged states only."""
        return f"{keys.read_model(pool, History.name)}:of"

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        state_key, of_key = self.state_key(keys, pool), self.states_key(keys, pool)
        state: HistoryState = await tx.get_json(state_key, HistoryState) or HistoryState()
        vms = sorted({r.vm for r in batch if r.vm and r.type in TRANSITIONS})
        known: dict[str, str] = {}
        if vms:
            raw = await tx.redis.hmget(of_key, vms)
            known = {vm: text(s) for vm, s in zip(vms, raw, strict=True) if s is not None}
        buckets = _Buckets(tx)
        for r in batch:
            await self._fold(keys, pool, r, state, known, of_key, buckets)
        buckets.flush()
        tx.put_json(state_key, state)

    async def _fold(
        self,
        keys: Keys,
        pool: str,
        r: Recorded,
        state: HistoryState,
        known: dict[str, str],
        of_key: str,
        buckets: _Buckets,
    ) -> None:
        before = (state.ready, state.running)
        moved = self._move(r, state, known, of_key, buckets.tx)
        e = r.event
        counters = isinstance(
            e, ev.VmCheckedOut | ev.VmCheckoutReverted | ev.PoolCheckoutFailed | ev.VmCloned | ev.VmReady
        )
        if not moved and not counters:
            return
        state.last_at = at = max(r.at, state.last_at)
        for res in (self.minute, self.hour):
            point = await self._point(keys, pool, res, at, before, state, buckets)
            point.ready, point.running = state.ready, state.running
            if isinstance(e, ev.VmCheckedOut):
                point.checkouts += 1
            elif isinstance(e, ev.VmCheckoutReverted):
                point.checkouts = max(0, point.checkouts - 1)
            elif isinstance(e, ev.PoolCheckoutFailed):
                point.failures += 1
            elif isinstance(e, ev.VmCloned):
                point.clones += 1
                point.clone_s += e.seconds
            elif isinstance(e, ev.VmReady):
                point.boots += 1
                point.boot_s += e.boot_seconds

    @staticmethod
    def _move(r: Recorded, state: HistoryState, known: dict[str, str], of_key: str, tx: Tx) -> bool:
        """Move the VM between gauged states; returns whether a gauge changed."""
        rule = TRANSITIONS.get(r.type)
        if rule is None or rule.target == SAME or not r.vm:
            return False
        old, new = known.get(r.vm, ""), rule.target if rule.target in _GAUGED else ""
        if old == new:
            return False
        if old:
            setattr(state, old, getattr(state, old) - 1)
        if new:
            setattr(state, new, getattr(state, new) + 1)
            known[r.vm] = new
            tx.op("HSET", of_key, r.vm, new)
        else:
            known.pop(r.vm, None)
            tx.op("HDEL", of_key, r.vm)
        return True

    async def _point(
        self,
        keys: Keys,
        pool: str,
        res: Resolution,
        at: int,
        before: tuple[int, int],
        state: HistoryState,
        buckets: _Buckets,
    ) -> Point:
        """The point of ``at`` at resolution ``res``, starting its bucket (and retiring old ones)."""
        unit = at // res.unit_ms
        index, offset = divmod(unit, res.per)
        key = res.key(keys, pool, index)
        bucket = await buckets.get(key)
        if bucket is None:
            bucket = buckets.new(key, before)
            self._retire(keys, pool, res, state.buckets.get(res.kind), index, buckets)
            state.buckets[res.kind] = index
        point = bucket.pts.get(offset)
        if point is None:
            point = bucket.pts[offset] = Point(ready=before[0], running=before[1])
        return point

    @staticmethod
    def _retire(
        keys: Keys, pool: str, res: Resolution, previous: int | None, index: int, buckets: _Buckets
    ) -> None:
        """Delete the buckets that a new bucket ``index`` pushes out of retention. Buckets at or
        before ``previous - keep`` went when ``previous`` was started, so at most ``keep`` remain."""
        if previous is None:
            return
        for old in range(max(previous - res.keep + 1, 0), min(previous, index - res.keep) + 1):
            buckets.delete(res.key(keys, pool, old))


class _Buckets:
    """The buckets one batch touches: read once, written once at the end (sorted), unless a later
    event of the same batch retired them (a long gap in one batch must end as separate batches do)."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self._cache: dict[str, Bucket | None] = {}
        self._dirty: set[str] = set()

    async def get(self, key: str) -> Bucket | None:
        if key not in self._cache:
            raw = await self.tx.redis.get(key)
            self._cache[key] = None if raw is None else _bucket_decoder.decode(raw)
        bucket = self._cache[key]
        if bucket is not None:
            self._dirty.add(key)
        return bucket

    def new(self, key: str, before: tuple[int, int]) -> Bucket:
        bucket = self._cache[key] = Bucket(open=before)
        self._dirty.add(key)
        return bucket

    def delete(self, key: str) -> None:
        self._cache[key] = None
        self._dirty.discard(key)
        self.tx.op("DEL", key)

    def flush(self) -> None:
        for key in sorted(self._dirty):
            self.tx.op("SET", key, _encoder.encode(self._cache[key]))
        self._dirty.clear()


_encoder = msgspec.json.Encoder()
_bucket_decoder = msgspec.json.Decoder(Bucket)
