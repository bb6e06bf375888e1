"""API tokens: created and revoked as events on the control stream; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis

from events import Keys, TokenCreated, TokenRevoked, encode
from events.streams import text

__all__ = ["TokenInfo", "Tokens", "new_token", "token_hash"]

_FIRST = string.ascii_lowercase[:25]  # a-y, as vmpooler's tokens
_REST = string.ascii_lowercase + string.digits

# One step in the control slot: change the registry and append the event together.
_CREATE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'type', 'token.created', 'v', 1, 'id', ARGV[3], 'at', ARGV[4], 'vm', '',
  'actor', ARGV[5], 'corr', ARGV[3], 'cause', '', 'data', ARGV[6])
redis.call('PUBLISH', string.match(KEYS[2], '^([^:]*):') .. ':bell', KEYS[2])  -- TEMPORARY bell
return 1
"""
_REVOKE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'type', 'token.revoked', 'v', 1, 'id', ARGV[3], 'at', ARGV[4], 'vm', '',
  'actor', ARGV[5], 'corr', ARGV[3], 'cause', '', 'data', ARGV[6])
redis.call('PUBLISH', string.match(KEYS[2], '^([^:]*):') .. ':bell', KEYS[2])  -- TEMPORARY bell
return 1
"""


def new_token() -> str:
    """32 characters ``[a-z0-9]``, the first a letter a-y (vmpooler's format)."""
    return secrets.choice(_FIRST) + "".join(secrets.choice(_REST) for _ in range(31))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A valid token: its owner, when it was created and last used (ms; 0 = never)."""

    user: str
    created: int
    last: int = 0


class Tokens:
    """The token registry (``keys.tokens()``), changed only together with its events."""

    def __init__(self, redis: Redis, keys: Keys, clock: Callable[[], int] | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._create = redis.register_script(_CREATE)
        self._revoke = redis.register_script(_REVOKE)

    async def create(self, user: str) -> str:
        """A new token for ``user`` (returned once, in clear; stored hashed)."""
        while True:
            token = new_token()
            digest, now = token_hash(token), self.clock()
            record = msgspec.json.encode(TokenInfo(user=user, created=now))
            body = encode(TokenCreated(token_hash=digest, user=user))
            keys = [self.keys.tokens(), self.keys.control_stream()]
            if await self._create(
                keys=keys, args=[digest, record, secrets.token_hex(16), now, f"api:{user}", body]
            ):
                return token

    async def lookup(self, token: str) -> TokenInfo | None:
        """The token's record, or ``None`` if it is not valid."""
        digest = token_hash(token)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.tokens(), digest)
            pipe.hget(self.keys.token_last_used(), digest)
            raw, last = await pipe.execute()
        if raw is None:
            return None
        info = msgspec.json.decode(raw, type=TokenInfo)
        return msgspec.structs.replace(info, last=int(last or 0))

    async def touch(self, token: str) -> None:
        """Record a use of the token (vmpooler's ``last``)."""
        await self.redis.hset(self.keys.token_last_used(), token_hash(token), self.clock())

    async def for_user(self, user: str) -> dict[str, TokenInfo]:
        """Token hash → record, for every token of ``user``."""
        raw = await self.redis.hgetall(self.keys.tokens())
        last = await self.redis.hgetall(self.keys.token_last_used())
        out: dict[str, TokenInfo] = {}
        for digest, record in sorted(raw.items()):
            info = msgspec.json.decode(record, type=TokenInfo)
            if info.user == user:
                out[text(digest)] = msgspec.structs.replace(info, last=int(last.get(digest, 0)))
        return out

    async def revoke(self, token: str, user: str) -> bool:
        """Revoke ``token`` if it exists and belongs to ``user``; returns whether it did."""
        info = await self.lookup(token)
        if info is None or info.user != user:
            return False
        digest, now = token_hash(token), self.clock()
        keys = [self.keys.tokens(), self.keys.control_stream(), self.keys.token_last_used()]
        body = encode(TokenRevoked(token_hash=digest, user=user))
        return bool(
            await self._revoke(keys=keys, args=[digest, "", secrets.token_hex(16), now, f"api:{user}", body])
        )
