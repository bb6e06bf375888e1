from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgspec

from events.streams import RedisClient

__all__ = ["Applied", "Checkpoint", "Tx", "apply_script"]

_ALLOWED = frozenset({"SET", "DEL", "HSET", "HDEL", "HINCRBY", "SADD", "SREM", "RPUSH", "ZADD", "ZREM"})
_APPLY = (resources.files("projectors") / "lua" / "apply.lua").read_text()


class Tx:
    """Read-model changes of one batch, applied atomically with the checkpoint by the runner.

    Reads go to Redis once per key and then to a local cache, so a batch that touches a record
    several times sees its own writes; only the projection's lease holder writes these keys.
    """

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.ops: list[Any] = []
        self.keys: dict[str, int] = {}
        """Every key written, by its position among the script's KEYS after the first three."""
        self._json: dict[str, Any] = {}
        self._dirty: set[str] = set()

    def op(self, name: str, key: str, *args: Any) -> None:
        assert name in _ALLOWED, name
        index = self.keys.setdefault(key, len(self.keys) + 4)  # KEYS[1..3]: checkpoint, lease, stream
        self.ops += [name, index, len(args), *args]

    async def get_json(self, key: str, type_: type[Any]) -> Any:
        """The record at ``key`` decoded as ``type_`` (``None`` if absent), seeing this batch's writes."""
        if key not in self._json:
            raw = await self.redis.get(key)
            self._json[key] = None if raw is None else msgspec.json.decode(raw, type=type_)
        return self._json[key]

    def put_json(self, key: str, value: Any) -> None:
        self._json[key] = value
        self._dirty.add(key)

    def delete_json(self, key: str) -> None:
        """Delete the record at ``key`` (after this batch's explicit ops, before its later writes)."""
        self._json[key] = None
        self._dirty.discard(key)
        self.op("DEL", key)

    def finish(self) -> tuple[list[str], list[Any]]:
        """The keys written and the ops to apply: explicit ones, then one SET per record written
        (sorted, deterministic)."""
        for key in sorted(self._dirty):
            self.op("SET", key, msgspec.json.encode(self._json[key]))
        self._dirty.clear()
        return list(self.keys), self.ops

    async def commit(self, script: Any, at: Checkpoint, holder: str, first: str, last: str) -> int:
        """Apply these changes and move the checkpoint ``at`` to ``last``, atomically, with
        ``script`` from :func:`apply_script`; returns one of ``Applied``."""
        keys, ops = self.finish()
        return int(
            await script(
                keys=[at.key, at.lease, at.stream, *keys], args=[holder, at.group, first, last, *ops]
            )
        )


@dataclass(frozen=True)
class Checkpoint:
    """Where one projection stands on one stream, and who may move it."""

    key: str
    lease: str
    stream: str
    group: str


class Applied:
    """Results of ``apply.lua``: see the script's header."""

    DONE, REDELIVERY, OVERLAP, NOT_HOLDER = 1, 0, -1, -2


def apply_script(redis: RedisClient) -> Any:
    """``apply.lua`` registered on ``redis``; called only by :meth:`Tx.commit` (its KEYS and ARGV
    are built in one place, so the script's signature can later be declared as a typed spec)."""
    return redis.register_script(_APPLY)
