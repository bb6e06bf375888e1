from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis

__all__ = ["Tx"]

_ALLOWED = frozenset({"SET", "DEL", "HSET", "HDEL", "HINCRBY", "SADD", "SREM", "RPUSH", "ZADD", "ZREM"})


class Tx:
    """Read-model changes of one batch, applied atomically with the checkpoint by the runner.

    Reads go to Redis once per key and then to a local cache, so a batch that touches a record
    several times sees its own writes; only the projection's lease holder writes these keys.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.ops: list[Any] = []
        self._json: dict[str, Any] = {}
        self._dirty: set[str] = set()

    def op(self, name: str, key: str, *args: Any) -> None:
        assert name in _ALLOWED, name
        self.ops += [name, key, len(args), *args]

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

    def finish(self) -> list[Any]:
        """The ops to apply: explicit ones, then one SET per record written (sorted, deterministic)."""
        for key in sorted(self._dirty):
            self.op("SET", key, msgspec.json.encode(self._json[key]))
        self._dirty.clear()
        return self.ops
