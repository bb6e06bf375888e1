"""Rate limiting (``:config: rate_limiting_enabled`` with ``:rate_limits:``): a fixed window per client
and class, counted atomically in Redis.

Client and class as vmpooler, but per user: the client is ``user:<the token's user>`` when
``X-AUTH-TOKEN`` carries a registered token (so minting more tokens buys no more requests; vmpooler
counts per token, and takes any token as given), else ``ip:<peer address>``; a POST under ``/vm`` or ``/ondemandvm`` is ``vm_creation``, a DELETE there
``vm_deletion``, any other request with a token ``authenticated``, and everything else
``global_per_ip``.

Unlike vmpooler's counter (whose expiry is pushed back by every request, so a steady client is never
let back in), each window is its own key, named by the window's number on the injected clock and
created with ``INCR`` plus an expiry set only when the key is new, in one script: a window resets
after ``period`` whatever the traffic, and concurrent API processes share the count. Tokens are
hashed before they become part of a key. Redis errors let the request through (fail open) and are
logged.

Every limited response carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``; a refused one is
429 with ``X-RateLimit-Reset`` (epoch seconds), ``Retry-After`` (seconds) and vmpooler's body.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from commands.settings import RateLimit, RateLimitSettings, Settings
from commands.tokens import TokenInfo, token_hash
from events import Keys

__all__ = ["Decision", "RateLimitMiddleware", "RateLimiter", "limit_class", "rate_limiting"]

log = logging.getLogger(__name__)

LimitClass = Literal["global_per_ip", "authenticated", "vm_creation", "vm_deletion"]

# One step: count this request in its window; the expiry is set only when the window's key is new,
# and outlives the window by a second so a late request in the window still finds its count.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

_VM_PATH = re.compile(r"/(?:ondemand)?vm(?:/|$)")


def limit_class(method: str, path: str, has_token: bool) -> LimitClass:
    """Which ``:rate_limits:`` class a request counts against (vmpooler's rules)."""
    if _VM_PATH.search(path):
        if method == "POST":
            return "vm_creation"
        if method == "DELETE":
            return "vm_deletion"
    return "authenticated" if has_token else "global_per_ip"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request.

    Attributes:
        allowed: whether the request may proceed.
        limit: requests allowed per window of its class.
        remaining: requests left in the current window (0 when refused).
        period: window length in seconds.
        retry_after: seconds until the window ends (at least 1).
        reset: epoch seconds at which the window ends.
    """

    allowed: bool
    limit: int
    remaining: int
    period: int
    retry_after: int
    reset: int


class RateLimiter:
    """Counts requests per client and class in fixed windows of the clock.

    Args:
        redis: client for the counters.
        prefix: the installation's key prefix.
        limits: the ``:rate_limits:`` section.
        clock: milliseconds since the epoch (injected so tests move time instead of waiting).
    """

    def __init__(
        self, redis: Redis, prefix: str, limits: RateLimitSettings, clock: Callable[[], int] | None = None
    ) -> None:
        self.prefix = prefix
        self.redis = redis
        self.tokens_key = Keys(prefix).tokens()
        self.limits = limits
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._count = redis.register_script(_COUNT)

    async def _user(self, token: str) -> str | None:
        """The registered token's user, or ``None``."""
        raw = await self.redis.hget(self.tokens_key, token_hash(token))
        return None if raw is None else msgspec.json.decode(raw, type=TokenInfo).user

    def key(self, client: str, cls: LimitClass, window: int) -> str:
        """The counter of ``client`` in ``cls`` for window number ``window`` (one hash tag per client)."""
        digest = hashlib.sha256(client.encode()).hexdigest()[:32]
        return f"{self.prefix}:{{rl:{digest}}}:ratelimit:{cls}:{window}"

    async def check(self, method: str, path: str, token: str, ip: str) -> Decision | None:
        """Count the request and decide; ``None`` when Redis could not be asked (fail open).

        A token counts for its user, whichever of the user's tokens it is. A token that is not in the
        registry identifies nobody: such a request counts by address, as if it had no token
        (otherwise a fresh made-up token per request would dodge every limit).
        """
        try:
            user = await self._user(token) if token else None
            cls = limit_class(method, path, user is not None)
            rule: RateLimit = getattr(self.limits, cls)
            client = f"user:{user}" if user is not None else f"ip:{ip}"
            period_ms = rule.period * 1000
            now = self.clock()
            window, into = divmod(now, period_ms)
            key = self.key(client, cls, window)
            count = int(await self._count(keys=[key], args=[period_ms - into + 1000]))
        except (RedisError, OSError) as exc:
            log.warning("rate limiting skipped (fail open): Redis unavailable: %s", exc)
            return None
        ends = (window + 1) * period_ms
        return Decision(
            allowed=count <= rule.limit,
            limit=rule.limit,
            remaining=max(0, rule.limit - count),
            period=rule.period,
            retry_after=max(1, math.ceil((ends - now) / 1000)),
            reset=math.ceil(ends / 1000),
        )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


class RateLimitMiddleware(ASGIMiddleware):
    """Applies a :class:`RateLimiter` to every HTTP request that reaches a route."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        decision = await self.limiter.check(
            str(scope.get("method", "GET")), scope.get("path", ""), _header(scope, b"x-auth-token"), ip
        )
        if decision is None:
            await next_app(scope, receive, send)
            return
        if not decision.allowed:
            await _refuse(send, decision)
            return
        extra = [
            (b"x-ratelimit-limit", str(decision.limit).encode()),
            (b"x-ratelimit-remaining", str(decision.remaining).encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await next_app(scope, receive, send_with_headers)


async def _refuse(send: Send, decision: Decision) -> None:
    body = {
        "ok": False,
        "error": "Rate limit exceeded",
        "limit": decision.limit,
        "period": decision.period,
        "retry_after": decision.retry_after,
    }
    content = msgspec.json.format(msgspec.json.encode(body), indent=2)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", b"0"),
        (b"x-ratelimit-reset", str(decision.reset).encode()),
        (b"retry-after", str(decision.retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})


def rate_limiting(
    settings: Settings, redis: Redis, prefix: str, clock: Callable[[], int] | None = None
) -> list[RateLimitMiddleware]:
    """The app's rate-limit middleware: none unless ``:config: rate_limiting_enabled``."""
    if not settings.config.rate_limiting_enabled:
        return []
    return [RateLimitMiddleware(RateLimiter(redis, prefix, settings.rate_limits, clock))]
