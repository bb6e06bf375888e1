"""EC2 provider benchmark against moto's EC2 simulator in server mode (started here, as the tests start it).

Through :class:`Ec2Provider` (so through its executor, circuit breaker and adaptive timeout, over HTTP to a
``moto_server`` on loopback) measures:

* create-to-ready: ``create_vm`` then ``vm_ready`` polled every 50 ms until true, one clone at a time
  (median and p95 over ``--clones``); moto launches instances at once and has no guests (the TCP check is
  off), so this is our, boto3's and moto's overhead, not EC2's boot time;
* EC2 API requests per clone, counted by the provider (``Ec2Api.calls``: one per HTTP request, retries
  included), over create + ready checks;
* clones per second with 1, 4 and 16 concurrent create-to-ready tasks (16 executor threads), ``--batch``
  clones per run, median of ``--runs``; instances are terminated after each run and moto's state is reset
  before the next, untimed (moto keeps terminated instances, and its lookups scan them all). moto and the
  benchmark share the machine's two cores, so the figures bound our overhead from above.

    .venv/bin/python bench/ec2.py [--clones 20] [--batch 32] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3

from bench._provider import arguments, destroy_all, p95
from commands.provider import PoolTarget
from providers.ec2 import Ec2Provider
from tests.ec2 import CREDENTIALS, REGION, MotoServer, start_moto

_names = itertools.count()


async def clone_to_ready(provider: Ec2Provider, pool: PoolTarget) -> tuple[str, float, int, int]:
    """One create-to-ready: the VM, seconds, API requests, ready polls."""
    vm = f"bench{next(_names):05d}"
    before = provider.api.calls
    started = time.perf_counter()
    await provider.create_vm(pool, vm)
    polls = 1
    while not await provider.vm_ready(pool, vm):
        polls += 1
        await asyncio.sleep(0.05)
    return vm, time.perf_counter() - started, provider.api.calls - before, polls


def raw_clone(ec2: Any, ami: str, n: int) -> float:
    """The baseline: the same four requests per clone straight from one boto3 client, no provider."""
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "vm_name", "Value": f"raw{n}"}]}]
    started = time.perf_counter()
    ec2.describe_instances(Filters=[{"Name": "tag:vm_name", "Values": [f"raw{n}"]}])
    made = ec2.run_instances(
        ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1, TagSpecifications=tags
    )
    instance_id = made["Instances"][0]["InstanceId"]
    ec2.describe_instances(Filters=[{"Name": "tag:vm_name", "Values": [f"raw{n}"]}])
    ec2.describe_instance_status(InstanceIds=[instance_id])
    took = time.perf_counter() - started
    ec2.terminate_instances(InstanceIds=[instance_id])
    return took


async def rate(provider: Ec2Provider, pools: list[PoolTarget], batch: int, server: MotoServer) -> float:
    server.reset()  # untimed: moto's lookups scan every instance it ever launched
    left = [batch]
    made: list[list[str]] = [[] for _ in pools]

    async def worker(i: int) -> None:
        while left[0] > 0:
            left[0] -= 1
            vm, *_ = await clone_to_ready(provider, pools[i])
            made[i].append(vm)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(len(pools))))
    took = time.perf_counter() - started
    for pool, vms in zip(pools, made, strict=True):
        await destroy_all(provider, pool, vms)
    return batch / took


async def main(args: argparse.Namespace) -> None:
    with start_moto() as server:
        ec2: Any = boto3.client("ec2", endpoint_url=server.url, region_name=REGION, **CREDENTIALS)
        ami = str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
        options = {
            "region": REGION,
            "endpoint_url": server.url,
            **CREDENTIALS,
            "instance_type": "t3.micro",
            "ready_check_port": 0,  # moto's private addresses are not on this machine
        }
        provider = Ec2Provider("ec2", options, key_prefix="bench", executor_workers=16)
        pool = PoolTarget(name="bench", template=ami)
        try:
            results = [await clone_to_ready(provider, pool) for _ in range(args.clones)]
            await destroy_all(provider, pool, [r[0] for r in results], at_once=8)
            durations, calls, polls = (
                [r[1] for r in results],
                [r[2] for r in results],
                [r[3] for r in results],
            )
            print(
                f"create-to-ready (moto_server, sequential, n={args.clones}): "
                f"median {statistics.median(durations) * 1000:.1f} ms, p95 {p95(durations) * 1000:.1f} ms"
            )
            server.reset()
            raw = [raw_clone(ec2, ami, n) for n in range(args.clones)]
            print(
                f"baseline, the same 4 requests from boto3 directly: median {statistics.median(raw) * 1000:.1f} ms "
                f"(provider / baseline {statistics.median(durations) / statistics.median(raw):.2f})"
            )
            print(
                f"EC2 API requests per create-to-ready: median {statistics.median(calls):g} "
                f"(min {min(calls)}, max {max(calls)}) over a median {statistics.median(polls):g} ready poll(s)"
            )
            for concurrency in args.concurrency:
                pools = [PoolTarget(name=f"bench{i}", template=ami) for i in range(concurrency)]
                rates = [await rate(provider, pools, args.batch, server) for _ in range(args.runs)]
                print(
                    f"clones/s at concurrency {concurrency:2d} ({args.batch} clones/run): "
                    f"median {statistics.median(rates):.1f} over {args.runs} runs "
                    f"({', '.join(f'{r:.1f}' for r in rates)})"
                )
            breaker = provider.breaker
            print(
                f"adaptive timeout after the run: {provider.timeout.current:g} s; circuit breaker: "
                f"{breaker.state.value if breaker else 'disabled'}; throttled answers: {provider.api.throttled}"
            )
        finally:
            await provider.close()


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__)))
