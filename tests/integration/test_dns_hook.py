"""The workers publish a VM's DNS record as part of its clone and withdraw it as part of its destroy;
a DNS failure fails the clone, or is retried with the destroy."""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

import events as ev
from commands.dns import DNS_CLASSES, DnsRecords
from commands.handlers import Handlers
from commands.pool import Meta, PoolCommands
from commands.provider import PoolTarget
from commands.settings import DnsSettings
from events import Keys, decode_entry
from providers.dummy import DummyProvider
from vmpooler.config import parse_settings

POOL = "debian-12"
META = Meta("test")


class Recording:
    def __init__(self, config: DnsSettings) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = False

    async def create_or_replace_record(self, hostname: str, ip: str) -> None:
        if self.fail:
            raise RuntimeError("dns down")
        self.calls.append(("create", hostname, ip))

    async def delete_record(self, fqdn: str) -> None:
        if self.fail:
            raise RuntimeError("dns down")
        self.calls.append(("delete", fqdn))


async def _log(redis: aioredis.Redis, keys: Keys) -> list[Any]:
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(keys.stream(POOL)))
    return [decode_entry(POOL, p, f) for p, f in entries]


async def test_records_follow_clone_and_destroy(redis: aioredis.Redis, prefix: str) -> None:
    settings = parse_settings(
        {
            "pools": [{"name": POOL, "template": "t/x", "dns_plugin": "corp"}],
            "dns_configs": {"corp": {"dns_class": "rec", "domain": "corp.example"}},
        },
        env={},
    )
    plugins: list[Recording] = []

    def build(config: DnsSettings) -> Recording:
        plugins.append(Recording(config))
        return plugins[-1]

    dns = DnsRecords(settings, {**DNS_CLASSES, "rec": build})
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys)
    provider = DummyProvider("dummy", redis, prefix=prefix, options={"createvm_max_time": 0})
    handlers = Handlers(
        cmds, lambda pool: (provider, PoolTarget(name=pool, template="tpl")), worker="w", dns=dns
    )
    await cmds.configure(
        POOL, ev.PoolConfigured(size=2, template="tpl", clone_limit=2, ready_ttl=0, timeout=0), META
    )
    requested = [r for r in await _log(redis, keys) if r.type == "vm.clone-requested"]
    (plugin,) = plugins

    await handlers.handle(requested[0])
    cloned = next(r for r in await _log(redis, keys) if r.type == "vm.cloned")
    assert plugin.calls == [("create", requested[0].vm, cloned.event.ip)]

    plugin.fail = True  # a DNS failure fails the clone
    await handlers.handle(requested[1])
    failed = [r for r in await _log(redis, keys) if r.type == "vm.clone-failed" and r.vm == requested[1].vm]
    assert failed
    assert "dns down" in failed[0].event.error

    plugin.fail = False
    vm = requested[0].vm
    await cmds.append(POOL, [(vm, ev.VmDiscarded(reason="drained"))], META)
    destroy = next(r for r in reversed(await _log(redis, keys)) if r.vm == vm)
    await handlers.handle(destroy)
    assert plugin.calls[-1] == ("delete", f"{vm}.corp.example")
