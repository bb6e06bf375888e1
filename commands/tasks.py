"""Tasks (disk, snapshot, revert, migration) run at most once per request, whatever is redelivered.

A worker claims ``<prefix>:{<pool>}:work:task:<event id>`` (``SET NX``, one day) just before its provider
call and marks it ``done`` once the outcome is in the log. A redelivery finding the claim knows an earlier
attempt reached the provider: if the log holds an event caused by the request, the task is done; if not,
the earlier attempt died between the provider call and the log, and repeating it could add a second disk or
revert a VM its user has since changed, so it is not repeated.
"""

from __future__ import annotations

from redis.asyncio import Redis

from events import Keys
from events.streams import text, xrange

__all__ = ["DONE", "TaskMarks"]

DONE = "done"
"""The claim's value once the task's outcome is in the log."""

_SCAN_BATCH = 500


class TaskMarks:
    """Claims on task requests, shared by every worker process through Redis.

    Args:
        redis: client (bytes replies).
        keys: key names.
        ttl_s: how long a claim is kept (redeliveries come within minutes).
    """

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int = 86_400) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, pool: str, event_id: str) -> str:
        return f"{self.keys.work(pool)}:task:{event_id}"

    async def claim(self, pool: str, event_id: str, holder: str) -> str:
        """Claim the request ``event_id``; returns ``""`` when claimed, else the earlier claim's value
        (``done``, or who started it)."""
        key = self._key(pool, event_id)
        if await self.redis.set(key, holder, nx=True, ex=self.ttl_s):
            return ""
        return text(await self.redis.get(key)) or holder

    async def finish(self, pool: str, event_id: str) -> None:
        """The task's outcome is in the log."""
        await self.redis.set(self._key(pool, event_id), DONE, ex=self.ttl_s)

    async def recorded(self, pool: str, position: str, event_id: str) -> bool:
        """Whether the pool's log holds, after ``position``, an event caused by ``event_id``."""
        start = f"({position}"
        while True:
            batch = await xrange(self.redis, self.keys.stream(pool), min=start, count=_SCAN_BATCH)
            if any(fields.get(b"cause") == event_id.encode() for _, fields in batch):
                return True
            if len(batch) < _SCAN_BATCH:
                return False
            start = f"({batch[-1][0].decode()}"
