"""Connecting to Redis: the configured server, or the embedded one this process starts (or finds)."""

from __future__ import annotations

import fcntl
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis

from commands.settings import ConfigError, Settings

from .redis_server import RedisServer

__all__ = ["RedisHandle", "open_redis"]

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
    # Connections idle for 2 s are PINGed before use, so a restarted Redis costs no failed request
    # (commands themselves are not retried: a decision script must never run twice). A blocking
    # pool: past its size a call waits for a connection instead of failing; blocking stream reads
    # hold a few, and the workers' hundreds of concurrent handlers share the rest.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max(_MIN_CONNECTIONS, settings.redis.connection_pool_size),
        timeout=max(1, settings.redis.connection_pool_timeout),
        health_check_interval=2,
    )
    client = aioredis.Redis(connection_pool=pool)
    return RedisHandle(client, url, server, lock)


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
