"""Session-wide Redis for every test tier (DESIGN §6).

Order: ``REDIS_URL`` if set; else a testcontainers Redis when a Docker engine answers; else a private
``redis-server`` subprocess on a free port. Tests isolate by key prefix and never FLUSHALL.

``redis_cluster``: a local 3-master Redis Cluster from the same ``redis-server`` binary, for the
tests that run the service on a Cluster (skipped, with the reason, where no binary can run one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests._cluster import LocalCluster
from vmpooler.redis_server import RedisServer


def _docker_redis() -> tuple[str, object] | None:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
    except Exception:
        return None
    from testcontainers.redis import RedisContainer

    container = RedisContainer("redis:7-alpine")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the session's Redis server."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    found = _docker_redis()
    if found is not None:
        url, container = found
        yield url
        container.stop()  # type: ignore[attr-defined]
        return
    server = RedisServer(appendonly=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A local Redis Cluster: 3 masters, no replicas (fail-over tests start their own)."""
    try:
        cluster = LocalCluster(masters=3).start()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no redis-server here can run a cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test, so tests share one Redis without seeing each other."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client on the session's server (bytes replies)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
