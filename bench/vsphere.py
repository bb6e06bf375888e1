"""vSphere provider benchmark against govmomi's vcsim (built by ``tests/vcsim``).

Starts one vcsim, clones vcsim's stock VM into a template, then through :class:`VsphereProvider` (so through its
executor, connection pool, circuit breaker and adaptive timeout) measures:

* clone-to-ready: ``create_vm`` then ``vm_ready`` polled every 50 ms until true, one clone at a time
  (median and p95 over ``--clones``); vcsim clones instantly and has no guests (the guest IP comes from
  vcsim's ``SET.guest.ipAddress``, the TCP port check is off), so this is our and pyvmomi's overhead plus
  vcsim's, not a real vCenter's clone time. The provider runs with its defaults (linked clones on: one read
  of the template's snapshot per clone; no host selection), plus ``create_folders``;
* SOAP calls per clone: every request pyvmomi sends, counted by wrapping ``SoapStubAdapter.InvokeMethod``
  (the one method that POSTs a SOAP envelope; property reads go through it too), over create + ready checks;
  logins made while the pool grows are left out (the pool is warmed first);
* clones per second with 1, 4 and 16 concurrent clone-to-ready tasks, ``connection_pool_size`` 4 and 16
  executor threads (so the connection pool is the bound), ``--batch`` clones per run, median of ``--runs``.
  Clones are destroyed between runs, untimed. Each concurrent task clones into its own folder: vcsim 0.24
  (Debian's govmomi) panics in ``FindByInventoryPath`` when it meets a VM that a concurrent clone into the
  same folder has registered but not yet named (``... does not have a Name``), which pyvmomi sees as
  ``RemoteDisconnected``; separate folders (like separate pools in vmpooler) avoid that simulator race.

    .venv/bin/python bench/vsphere.py [--clones 20] [--batch 32] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyVmomi import SoapAdapter

from bench._provider import arguments, destroy_all, p95
from commands.provider import PoolTarget
from providers.vsphere import VsphereProvider
from tests.vcsim import TEMPLATE, build_vcsim, last_build_error, make_template, start_vcsim


class SoapCounter:
    """Counts ``SoapStubAdapter.InvokeMethod`` calls (one per SOAP request) process-wide."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        stub: Any = SoapAdapter.SoapStubAdapter
        original = stub.InvokeMethod

        def counted(adapter: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.count += 1
            return original(adapter, *args, **kwargs)

        stub.InvokeMethod = counted


_names = itertools.count()


async def clone_to_ready(provider: VsphereProvider, pool: PoolTarget) -> tuple[str, float]:
    vm = f"bench{next(_names):05d}"
    started = time.perf_counter()
    await provider.create_vm(pool, vm)
    while not await provider.vm_ready(pool, vm):  # noqa: ASYNC110 - polling the provider is the point
        await asyncio.sleep(0.05)
    return vm, time.perf_counter() - started


async def counted_clone(
    provider: VsphereProvider, pool: PoolTarget, counter: SoapCounter
) -> tuple[str, float, int, int, int]:
    """One clone-to-ready; also SOAP calls for ``create_vm``, for the ``vm_ready`` polls, and how many polls."""
    vm = f"bench{next(_names):05d}"
    started = time.perf_counter()
    before = counter.count
    await provider.create_vm(pool, vm)
    created = counter.count
    polls = 1
    while not await provider.vm_ready(pool, vm):
        polls += 1
        await asyncio.sleep(0.05)
    return vm, time.perf_counter() - started, created - before, counter.count - created, polls


async def main(args: argparse.Namespace) -> None:
    binary = build_vcsim()
    if binary is None:
        sys.exit(f"vcsim unavailable: {last_build_error()}")
    counter = SoapCounter()
    with start_vcsim(0, binary=binary) as server:
        make_template(server)
        options = {
            "server": server.host,
            "port": server.port,
            "username": server.username,
            "password": server.password,
            "insecure": True,
            "create_folders": True,
            "ready_check_port": 0,
            "connection_pool_size": 4,
            "connection_pool_timeout": 60,
            "clone_extra_config": {"SET.guest.ipAddress": "127.0.0.1"},
        }
        provider = VsphereProvider("vsphere", options, executor_workers=16)
        pool = PoolTarget(name="bench", template=TEMPLATE, options={"folder": "vmpooler-bench/bench"})
        try:
            await asyncio.gather(*(provider.list_vms(pool) for _ in range(4)))  # open all 4 sessions

            durations: list[float] = []
            create_calls: list[int] = []
            ready_calls: list[int] = []
            polls: list[int] = []
            made: list[str] = []
            for _ in range(args.clones):
                vm, took, created, readied, polled = await counted_clone(provider, pool, counter)
                create_calls.append(created)
                ready_calls.append(readied)
                polls.append(polled)
                durations.append(took)
                made.append(vm)
            await destroy_all(provider, pool, made)
            print(
                f"clone-to-ready (vcsim, sequential, n={args.clones}): "
                f"median {statistics.median(durations) * 1000:.1f} ms, p95 {p95(durations) * 1000:.1f} ms"
            )
            calls = [c + r for c, r in zip(create_calls, ready_calls, strict=True)]
            print(
                f"SOAP calls per clone-to-ready: median {statistics.median(calls):g} (min {min(calls)}, "
                f"max {max(calls)}): create_vm {statistics.median(create_calls):g}, vm_ready "
                f"{statistics.median(ready_calls):g} over a median {statistics.median(polls):g} poll(s)"
            )

            for concurrency in args.concurrency:
                rates: list[float] = []
                pools = [
                    PoolTarget(
                        name=f"bench{i}", template=TEMPLATE, options={"folder": f"vmpooler-bench/bench{i}"}
                    )
                    for i in range(concurrency)
                ]
                for _ in range(args.runs):
                    made_by: list[list[str]] = [[] for _ in pools]
                    left = [args.batch]

                    async def worker(target: PoolTarget, left: list[int], made: list[str]) -> None:
                        while left[0] > 0:
                            left[0] -= 1
                            vm, _ = await clone_to_ready(provider, target)
                            made.append(vm)

                    started = time.perf_counter()
                    await asyncio.gather(*(worker(pools[i], left, made_by[i]) for i in range(concurrency)))
                    rates.append(args.batch / (time.perf_counter() - started))
                    for target, vms in zip(pools, made_by, strict=True):
                        await destroy_all(provider, target, vms)
                print(
                    f"clones/s at concurrency {concurrency:2d} (connection pool 4, {args.batch} clones/run): "
                    f"median {statistics.median(rates):.1f} over {args.runs} runs "
                    f"({', '.join(f'{r:.1f}' for r in rates)})"
                )
            breaker = provider.breaker
            print(
                f"adaptive timeout after the run: {provider.timeout.current:g} s; circuit breaker: "
                f"{breaker.state.value if breaker else 'disabled'}"
            )
        finally:
            await provider.close()


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__)))
