"""Checkout benchmark: checkout + delete cycles against one API process, simulated provider.

Starts a private redis-server, one ``vmpooler api`` process (the one measured) and one
``vmpooler manager`` process (workers refill the pool), then drives POST /api/v3/vm/<pool> +
DELETE /api/v3/vm/<hostname> cycles at concurrency 1, 16 and 64 over keep-alive HTTP/1.1
connections. Prints one figure per line: the median over ``--runs`` runs of requests/s and the
p50/p99 latency of checkouts and deletes.

On a 2-core machine the manager (whose workers clone and destroy a VM per cycle) competes with the
API for CPU, so by default it is paused (SIGSTOP) during each measured run and resumed between
runs to refill the pool; ``--live-manager`` keeps it running. A last, unhurried phase (one client,
a pause between cycles, the manager running) measures how long after each checkout the
replacement clone was requested, from the log's stream entry times.

    .venv/bin/python bench/checkout.py [--runs 3] [--cycles 1500] [--pool-size 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

from vmpooler.redis_server import RedisServer, free_port

POOL = "bench-pool"


def _config(size: int) -> str:
    return f"""
:config:
  task_limit: 64
  vm_lifetime: 24
:providers:
  :dummy: {{}}
:pools:
  - name: {POOL}
    template: templates/bench
    size: {size}
"""


class Http:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost less than the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length)
        return status, body


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def _run(port: int, concurrency: int, cycles: int, pause: float = 0.0) -> dict[str, float]:
    checkout_ms: list[float] = []
    delete_ms: list[float] = []
    empty = 0
    remaining = cycles

    async def client() -> None:
        nonlocal remaining, empty
        http = Http(port)
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            status, body = await http.request("POST", f"/api/v3/vm/{POOL}")
            t1 = time.perf_counter()
            if status != 200:
                empty += 1
                await asyncio.sleep(0.01)
                continue
            checkout_ms.append((t1 - t0) * 1000)
            host = json.loads(body)[POOL]["hostname"]
            t2 = time.perf_counter()
            status, _ = await http.request("DELETE", f"/api/v3/vm/{host}")
            delete_ms.append((time.perf_counter() - t2) * 1000)
            assert status == 200, status
            if pause:
                await asyncio.sleep(pause)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "requests_per_s": (len(checkout_ms) + len(delete_ms) + empty) / elapsed,
        "checkout_p50_ms": _pct(checkout_ms, 0.50),
        "checkout_p99_ms": _pct(checkout_ms, 0.99),
        "delete_p50_ms": _pct(delete_ms, 0.50),
        "delete_p99_ms": _pct(delete_ms, 0.99),
        "empty_503": float(empty),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _refill_delays_ms(client: redis.Redis, prefix: str, since: bytes) -> list[float]:
    """For each checkout after ``since``, ms until the next clone request of the pool (entry times)."""
    delays, pending = [], []
    for position, fields in client.xrange(f"{prefix}:{{{POOL}}}:events", min=b"(" + since):
        ms = int(position.split(b"-")[0])
        kind = fields[b"type"]
        if kind == b"vm.checked-out":
            pending.append(ms)
        elif kind == b"vm.clone-requested" and pending:
            delays.append(float(ms - pending.pop(0)))
    return delays


def _wait_full(client: redis.Redis, prefix: str, size: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.zcard(f"{prefix}:{{{POOL}}}:s:ready") < size:
        if time.monotonic() > deadline:
            raise SystemExit("the pool did not fill in time")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=1500, help="checkout+delete cycles per run")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=2000,
        help="ready VMs at the start of each run (more than --cycles, "
        "so the run measures the API, not how fast the simulated cloud refills)",
    )
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--live-manager", action="store_true", help="keep the manager running during runs")
    args = parser.parse_args()

    vmpooler = str(Path(sys.executable).parent / "vmpooler")
    with RedisServer(appendonly=False) as server:
        prefix = f"bench{os.getpid()}"
        document = _config(args.pool_size) + f":redis:\n  url: {server.url}\n  prefix: {prefix}\n"
        env = {**os.environ, "VMPOOLER_CONFIG": document}
        port = free_port()
        procs = [
            subprocess.Popen([vmpooler, "--log-level", "WARNING", "manager"], env=env),
            subprocess.Popen([vmpooler, "--log-level", "WARNING", "api", "--port", str(port)], env=env),
        ]
        client = redis.Redis.from_url(server.url)
        try:
            started = time.monotonic()
            _wait_full(client, prefix, args.pool_size)
            fill_s = time.monotonic() - started
            print(f"pool_fill_vms_per_s {args.pool_size / fill_s:.1f}", flush=True)
            print(
                f"# machine: {os.cpu_count()} cores; pool {args.pool_size}; {args.cycles} cycles per run; "
                f"median of {args.runs} runs",
                flush=True,
            )
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                results = []
                for _ in range(args.runs):
                    _wait_full(client, prefix, args.pool_size)
                    if not args.live_manager:
                        procs[0].send_signal(signal.SIGSTOP)
                    try:
                        cpu = _cpu_s(procs[1].pid)
                        result = asyncio.run(_run(port, concurrency, args.cycles))
                        # the API's own CPU per checkout + delete cycle (the figure that must not rise)
                        result["api_cpu_ms_per_cycle"] = (_cpu_s(procs[1].pid) - cpu) * 1000 / args.cycles
                        results.append(result)
                    finally:
                        procs[0].send_signal(signal.SIGCONT)
                for name in results[0]:
                    value = statistics.median(r[name] for r in results)
                    print(f"c={concurrency:<3} {name:<16} {value:10.2f}", flush=True)
            _wait_full(client, prefix, args.pool_size)
            since = client.xrevrange(f"{prefix}:{{{POOL}}}:events", count=1)[0][0]
            asyncio.run(_run(port, 1, 200, pause=0.02))
            delays = _refill_delays_ms(client, prefix, since)
            print(f"refill_requested_after_checkout_p50_ms {_pct(delays, 0.5):.1f}")
            print(f"refill_requested_after_checkout_p99_ms {_pct(delays, 0.99):.1f}")
            print(f"refill_requested_after_checkout_max_ms {max(delays):.1f}")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)


if __name__ == "__main__":
    main()
