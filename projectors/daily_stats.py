"""Daily clone, boot and tag statistics per pool (vmpooler's ``vmpooler__clone__<date>``,
``__boot__<date>`` and ``__tag__<date>``).

One record per pool per UTC day: count, total, min and max of the clone durations
(``VmCloned.seconds``) and of the boot durations (``VmReady.boot_seconds``) of the events that
happened that day, and how many times each tag value was set (``VmTagged``). ``/status`` shows
today's, ``/summary`` a range of days.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

import events as ev
from events import Keys, Recorded

from ._tx import Tx

__all__ = ["DailyStats", "DailyStatsView", "DurationStats", "day_key", "day_of"]


class DurationStats(msgspec.Struct, kw_only=True):
    """Durations in seconds of one kind of task on one day.

    Attributes:
        count: how many tasks finished.
        total: their summed duration.
        min: the shortest (0 when ``count`` is 0).
        max: the longest (0 when ``count`` is 0).
    """

    count: int = 0
    total: float = 0.0
    min: float = 0.0
    max: float = 0.0

    def add(self, seconds: float) -> None:
        if self.count == 0:
            self.min = self.max = seconds
        else:
            self.min = min(self.min, seconds)
            self.max = max(self.max, seconds)
        self.count += 1
        self.total += seconds


class DailyStatsView(msgspec.Struct, kw_only=True):
    """One pool's statistics for one UTC day (``day`` is ``YYYY-MM-DD``)."""

    pool: str
    day: str
    clone: DurationStats = msgspec.field(default_factory=DurationStats)
    boot: DurationStats = msgspec.field(default_factory=DurationStats)
    tags: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    """tag name -> value -> how many times a VM was given that value that day."""


def day_of(ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of a time in milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def day_key(keys: Keys, pool: str, day: str) -> str:
    """Key of the record of ``pool`` for ``day``."""
    return f"{keys.read_model(pool, DailyStats.name)}:d:{day}"


class DailyStats:
    """Keeps ``<rm:daily>:d:<YYYY-MM-DD>`` per pool: a :class:`DailyStatsView` as JSON."""

    name = "daily"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        for r in batch:
            e = r.event
            if isinstance(e, ev.VmCloned):
                view = await self._view(keys, pool, r.at, tx)
                view.clone.add(e.seconds)
            elif isinstance(e, ev.VmReady):
                view = await self._view(keys, pool, r.at, tx)
                view.boot.add(e.boot_seconds)
            elif isinstance(e, ev.VmTagged) and e.tags:
                view = await self._view(keys, pool, r.at, tx)
                for tag, value in sorted(e.tags.items()):
                    values = view.tags.setdefault(tag, {})
                    values[value] = values.get(value, 0) + 1

    async def _view(self, keys: Keys, pool: str, at: int, tx: Tx) -> DailyStatsView:
        """The day's record; the Tx's cache holds it for this batch only, so changing it in place is
        safe, and ``put_json`` makes the runner write it with the checkpoint."""
        day = day_of(at)
        key = day_key(keys, pool, day)
        view: DailyStatsView | None = await tx.get_json(key, DailyStatsView)
        if view is None:
            view = DailyStatsView(pool=pool, day=day)
        tx.put_json(key, view)
        return view
