"""Connecting to Redis: the configured server, or the embedded one this process starts (or finds)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError, SlotNotCoveredError

from commands.settings import ConfigError, Settings

from .redis_server import RedisServer

__all__ = ["RedisHandle", "client_for", "open_redis", "wait_for_redis"]

log = logging.getLogger(__name__)


@dataclass
class RedisHandle:
    """A Redis client and, in embedded mode, the server we started for it."""

    client: aioredis.Redis
    url: str
    server: RedisServer | None = None
    lock: IO[str] | None = None

    async def close(self) -> None:
        await self.client.aclose()
        if self.server is not None:
            self.server.stop()
        if self.lock is not None:
            self.lock.close()


_MIN_CONNECTIONS = 64
"""vmpooler's ``connection_pool_size`` default (10) fits its threads, not our async handlers."""


def open_redis(settings: Settings, *, start_embedded: bool = True) -> RedisHandle:
    """Connect to the configured Redis. In embedded mode, the first process to lock the data dir
    starts a ``redis-server`` there (AOF on) and publishes its port in the data dir; any other
    process (a CLI audit, say) finds it through that port file. Two servers never share a data dir."""
    url = settings.redis.connection_url()
    server = None
    lock = None
    if url is None and settings.redis.cluster:
        raise ConfigError(":redis: cluster is true, but no server or url names a node of the cluster")
    if url is None:
        data_dir = Path(settings.redis.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = (data_dir / "lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            lock = None
            url = _running_embedded(data_dir)
        else:
            if not start_embedded:
                raise ConfigError(":redis: is not configured and no embedded Redis is running")
            server = RedisServer(data_dir, appendonly=True).start()
            (data_dir / "redis.port").write_text(str(server.port))
            url = server.url
            log.info("embedded redis-server on %s, data in %s", url, data_dir)
    client = client_for(url, settings, max(_MIN_CONNECTIONS, settings.redis.connection_pool_size))
    return RedisHandle(client, url, server, lock)


def client_for(url: str, settings: Settings, connections: int) -> aioredis.Redis:
    """A client of its own on ``url`` (one Redis, or any node of a Cluster with ``:redis: cluster``)
    with a pool of ``connections``: every pool of a process is built here (the main one, and small
    ones that must never take the main one's connections, such as the dashboard's)."""
    if settings.redis.cluster:
        return _cluster_client(url, max(connections, _CLUSTER_CONNECTIONS_MIN))
    # A blocking pool: past its size a call waits for a connection instead of failing; the workers'
    # hundreds of concurrent handlers share it.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=max(1, settings.redis.connection_pool_timeout),
        health_check_interval=HEALTH_CHECK_S,
    )
    pool.connection_class = reconnecting(pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


class _Cluster(RedisCluster):
    """The cluster client, retrying a command only on errors that say it did not run.

    redis-py also retries on connection errors and timeouts, when the command may have run and
    only its reply was lost; a decision script must never run twice. MOVED and ASK redirects are
    followed all the same (a refusal, not a retry), and CLUSTERDOWN or an uncovered slot during a
    fail-over is retried with the backoff below while the replica takes over. Pipelines (reads,
    acknowledgements, name reservations: all safe to send again) keep redis-py's retries.
    """

    ERRORS_ALLOW_RETRY = (ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]


def _cluster_client(url: str, connections_per_node: int) -> aioredis.Redis:
    client = _Cluster.from_url(
        url,
        max_connections=connections_per_node,
        health_check_interval=HEALTH_CHECK_S,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 8),
    )
    kwargs = client.nodes_manager.connection_kwargs  # the nodes found later are built from these
    kwargs["connection_class"] = reconnecting(kwargs["connection_class"])
    for node in client.startup_nodes:
        node.connection_class = kwargs["connection_class"]
    # The one place a cluster client stands in for ``redis.asyncio.Redis``, which every module is
    # typed against: it answers the same commands for the calls we make (one slot each, or
    # pipelines and SCAN, which it splits by node). A later cleanup can type the code against a
    # Protocol of the commands used (see ``events.streams.RedisClient``) and drop this cast.
    return cast(aioredis.Redis, client)


_CLUSTER_CONNECTIONS_MIN = 512
"""The cluster client's pools do not wait for a free connection (they raise at the limit), so
each is sized for every handler, request and reader of a process at once."""

HEALTH_CHECK_S = 2
"""A connection idle this long is PINGed before its next command."""

_RECONNECT = Retry(ExponentialBackoff(cap=0.5, base=0.05), 4)


class _ReconnectingHealthCheck(AbstractConnection):
    """The PING before a command on an idle connection reconnects (with a short backoff) when the
    socket turns out dead, as after a Redis restart, so no request fails once Redis answers.

    Only this path retries, because nothing of the command was sent yet: commands keep redis-py's
    default of no retry, since one whose reply was lost may have run (a decision script must never
    run twice: a second checkout would hand out a second VM)."""

    async def check_health(self) -> None:
        if self.health_check_interval and asyncio.get_running_loop().time() > self.next_health_check:
            await _RECONNECT.call_with_retry(self._send_ping, self._ping_failed, with_failure_count=True)


def reconnecting(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (plain TCP, TLS or Unix socket, as the URL chose) with a health check
    that reconnects."""
    return type(f"Reconnecting{connection_class.__name__}", (_ReconnectingHealthCheck, connection_class), {})


async def wait_for_redis(handle: RedisHandle, timeout_s: float, *, log_every_s: float = 5.0) -> None:
    """Return once Redis answers PING; until then retry with a growing pause (at most 2 s), logging
    the cause now and then, for up to ``timeout_s`` seconds.

    Raises:
        ConfigError: Redis did not answer in time (its message names the server and the cause).
    """
    loop = asyncio.get_running_loop()
    deadline, pause, logged = loop.time() + timeout_s, 0.1, -log_every_s
    while True:
        try:
            await handle.client.ping()
            return
        except (RedisError, RedisClusterException, OSError) as exc:
            cause = _cause(exc)
        now = loop.time()
        if now >= deadline:
            raise ConfigError(f"Redis at {_where(handle.url)} is unreachable after {timeout_s:g} s: {cause}")
        if now - logged >= log_every_s:
            log.warning(
                "Redis at %s does not answer (%s); retrying for up to %g s",
                _where(handle.url),
                cause,
                timeout_s,
            )
            logged = now
        await asyncio.sleep(min(pause, deadline - now))
        pause = min(2.0, pause * 2)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else url


def _cause(exc: BaseException) -> str:
    """The root cause of a connection failure in a few words (``Connection refused``)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text is "Connect call failed (...)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip().rstrip(".") or type(exc).__name__


def _running_embedded(data_dir: Path, timeout: float = 10.0) -> str:
    """The URL of the embedded Redis another process started in ``data_dir``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port_file = data_dir / "redis.port"
        if port_file.exists() and _answers(int(port_file.read_text() or 0)):
            return f"redis://127.0.0.1:{int(port_file.read_text())}/0"
        time.sleep(0.1)
    raise ConfigError(f"another process holds {data_dir}, but its embedded Redis does not answer")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
