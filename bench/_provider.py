"""What the provider benchmarks share: one destroy helper, a percentile, and their command line."""

from __future__ import annotations

import argparse
import asyncio

from commands.provider import PoolTarget, Provider

__all__ = ["arguments", "destroy_all", "p95"]


async def destroy_all(provider: Provider, pool: PoolTarget, vms: list[str], at_once: int = 4) -> None:
    """Destroy ``vms`` of ``pool``, ``at_once`` at a time (untimed clean-up between runs)."""
    sem = asyncio.Semaphore(at_once)

    async def one(vm: str) -> None:
        async with sem:
            await provider.destroy_vm(pool, vm)

    await asyncio.gather(*(one(vm) for vm in vms))


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * 0.95 + 0.999999) - 1, 0)]


def arguments(doc: str | None) -> argparse.Namespace:
    """``--clones`` (sequential create-to-ready), ``--batch`` (clones per rate run), ``--runs``, ``--concurrency``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--clones", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    return parser.parse_args()
