"""A local Redis Cluster for tests: masters (and replicas) started from the suite's ``redis-server``
binary, joined with ``CLUSTER MEET``, slots split evenly with ``CLUSTER ADDSLOTS`` (Redis 6.2 and 7
both have them; ``redis-cli --cluster`` is not needed)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

import redis

from vmpooler.redis_server import RedisServer

__all__ = ["LocalCluster"]

SLOTS = 16384


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, on loopback.

    Args:
        masters: how many masters share the slots.
        replicas: replicas per master (for fail-over tests).
        node_timeout_ms: ``cluster-node-timeout``: how long a silent master takes to be failed over.
    """

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms)]
        # a replica takes over however long its link was down (the default refuses stale replicas)
        args += ["--cluster-replica-validity-factor", "0"]
        self.masters = [
            RedisServer(port=cluster_port(), appendonly=False, extra_args=args) for _ in range(masters)
        ]
        self.replicas = [
            RedisServer(port=cluster_port(), appendonly=False, extra_args=args)
            for _ in range(masters * replicas)
        ]
        self.replicas_per_master = replicas

    @property
    def nodes(self) -> list[RedisServer]:
        return [*self.masters, *self.replicas]

    @property
    def url(self) -> str:
        """A URL of one node (any node will do for a cluster client)."""
        return self.masters[0].url

    def start(self, timeout: float = 30.0) -> LocalCluster:
        for server in self.nodes:
            server.start()
        try:
            self._join(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _join(self, deadline: float) -> None:
        first = self.client(self.masters[0])
        for server in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)
        share = SLOTS // len(self.masters)
        for i, server in enumerate(self.masters):
            end = SLOTS if i == len(self.masters) - 1 else (i + 1) * share
            slots = list(range(i * share, end))
            for chunk in range(0, len(slots), 2000):
                self.client(server).execute_command("CLUSTER", "ADDSLOTS", *slots[chunk : chunk + 2000])
        _until(
            lambda: all(self._known(s) == len(self.nodes) for s in self.nodes), deadline, "the nodes to meet"
        )
        for i, replica in enumerate(self.replicas):
            master = self.masters[i // self.replicas_per_master]
            master_id = self.client(master).execute_command("CLUSTER", "MYID")
            self.client(replica).execute_command("CLUSTER", "REPLICATE", master_id)
        _until(lambda: all(self._ok(s) for s in self.nodes), deadline, "the cluster to be ok")
        _until(lambda: all(self._linked(r) for r in self.replicas), deadline, "the replicas to sync")

    @staticmethod
    def client(server: RedisServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5, decode_responses=True)

    def _info(self, server: RedisServer) -> dict[str, str]:
        raw = self.client(server).execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def _known(self, server: RedisServer) -> int:
        return int(self._info(server).get("cluster_known_nodes", 0))

    def _ok(self, server: RedisServer) -> bool:
        return self._info(server).get("cluster_state") == "ok"

    def _linked(self, replica: RedisServer) -> bool:
        info = self.client(replica).info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def primaries(self) -> list[RedisServer]:
        """The nodes that are masters now (after a fail-over, a former replica is one)."""
        alive = [s for s in self.nodes if s._proc is not None and s._proc.poll() is None]
        return [s for s in alive if self.client(s).info("replication").get("role") == "master"]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says the cluster is ok (e.g. after a fail-over)."""
        alive = [s for s in self.nodes if s._proc is not None and s._proc.poll() is None]
        _until(lambda: all(self._ok(s) for s in alive), time.monotonic() + timeout, "the cluster to be ok")

    def stop(self) -> None:
        for server in self.nodes:
            server.stop()


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher, at most 65,535) is free too."""
    while True:
        port = random.randint(20_000, 55_535)
        if _free(port) and _free(port + 10_000):
            return port


def _until(check: Callable[[], bool], deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")
