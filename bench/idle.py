"""Idle cost: CPU seconds a ``vmpooler manager`` with many empty pools (and its Redis) spend doing nothing.

Starts a private redis-server and one ``vmpooler manager`` on ``--pools`` dummy pools of size 0,
waits ``--warmup`` seconds for start-up to settle, then reads utime+stime of both processes from
``/proc/<pid>/stat`` over ``--seconds``. Prints the median over ``--runs`` runs (a fresh Redis and
manager each run) of each figure, as CPU seconds per minute.

    .venv/bin/python bench/idle.py [--pools 1000] [--seconds 60] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from vmpooler.redis_server import RedisServer

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _config(pools: int, port: int) -> str:
    lines = [":config:", "  task_limit: 10", ":providers:", "  :dummy: {}", ":redis:"]
    lines += [f"  url: redis://127.0.0.1:{port}/0", ":pools:"]
    for i in range(pools):
        lines += [f"  - name: idle-{i}", "    template: templates/idle", "    size: 0", "    provider: dummy"]
    return "\n".join(lines) + "\n"


_READS = ("xread", "xreadgroup", "xrange", "xrevrange", "xpending", "xclaim")
"""The log readers' commands (workers, projection runners), reported apart."""


def _calls(port: int) -> dict[str, tuple[int, int]]:
    """Command -> (calls, microseconds spent) so far."""
    stats = redis.Redis(port=port).info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}


def _report(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], seconds: float) -> None:
    delta = {k: (c - before.get(k, (0, 0))[0], u - before.get(k, (0, 0))[1]) for k, (c, u) in after.items()}
    busiest = sorted(delta.items(), key=lambda kv: -kv[1][1])[:6]
    print(
        "redis busiest (calls/s, ms/s): "
        + ", ".join(f"{k} {c / seconds:.0f} {u / seconds / 1000:.1f}" for k, (c, u) in busiest)
    )
    reads = [(k, delta.get(k, (0, 0))) for k in _READS]
    print(
        "readers' commands (calls/s, ms/s): "
        + ", ".join(f"{k} {c / seconds:.1f} {u / seconds / 1000:.2f}" for k, (c, u) in reads),
        flush=True,
    )


def one_run(pools: int, seconds: float, warmup: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(appendonly=False) as redis:
        config = Path(tmp) / "idle.yaml"
        config.write_text(_config(pools, redis.port))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
        log = (Path(tmp) / "manager.log").open("wb")
        vmpooler = str(Path(sys.executable).parent / "vmpooler")
        proc = subprocess.Popen(
            [vmpooler, "manager", "--config", str(config)], env=env, stdout=log, stderr=log
        )
        try:
            time.sleep(warmup)
            assert redis._proc is not None
            rpid = redis._proc.pid
            m0, r0, c0 = _cpu(proc.pid), _cpu(rpid), _calls(redis.port)
            time.sleep(seconds)
            m1, r1, c1 = _cpu(proc.pid), _cpu(rpid), _calls(redis.port)
            _report(c0, c1, seconds)
            if proc.poll() is not None:
                raise RuntimeError(f"the manager exited with {proc.returncode}; see its log")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
        per_min = 60.0 / seconds
        return (m1 - m0) * per_min, (r1 - r0) * per_min


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="start-up folds every pool's first events")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.pools, args.seconds, args.warmup) for _ in range(args.runs)]
    print(f"manager CPU s/min, {args.pools} idle pools: {statistics.median(r[0] for r in runs):.2f}")
    print(f"redis CPU s/min, {args.pools} idle pools: {statistics.median(r[1] for r in runs):.2f}")
    print("runs (manager, redis): " + ", ".join(f"({m:.2f}, {r:.2f})" for m, r in runs))


if __name__ == "__main__":
    main()
