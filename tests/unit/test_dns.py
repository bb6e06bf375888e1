"""DNS plugins: the registry picks a plugin per ``:dns_configs:`` entry; ``dynamic-dns`` manages
nothing; create gets the short name and the IP, delete gets the FQDN."""

from __future__ import annotations

from typing import Any

import pytest

from commands.dns import DNS_CLASSES, DnsRecords, DynamicDns
from commands.settings import ConfigError, DnsSettings, Settings
from vmpooler.config import parse_settings


class Recording:
    """A plugin that records its calls (one instance per DNS config)."""

    def __init__(self, config: DnsSettings) -> None:
        self.config = config
        self.calls: list[tuple[str, ...]] = []

    async def create_or_replace_record(self, hostname: str, ip: str) -> None:
        self.calls.append(("create", hostname, ip))

    async def delete_record(self, fqdn: str) -> None:
        self.calls.append(("delete", fqdn))


def settings(**dns_configs: Any) -> Settings:
    pools = [
        {"name": "a", "template": "t/a", "dns_plugin": "corp"},
        {"name": "b", "template": "t/b", "dns_plugin": "lab"},
        {"name": "c", "template": "t/c", "dns_plugin": "dyn"},
        {"name": "d", "template": "t/d"},
    ]
    configs = {
        "corp": {"dns_class": "recording", "domain": "corp.example", "zone": "z1"},
        "lab": {"dns_class": "recording", "domain": "lab.example"},
        "dyn": {"dns_class": "dynamic-dns", "domain": "dyn.example"},
        **dns_configs,
    }
    return parse_settings({"pools": pools, "dns_configs": configs}, env={})


async def test_records_go_to_the_pools_plugin_with_its_domain() -> None:
    built: list[Recording] = []

    def factory(config: DnsSettings) -> Recording:
        built.append(Recording(config))
        return built[-1]

    records = DnsRecords(settings(), {**DNS_CLASSES, "recording": factory})
    await records.vm_cloned("a", "vm-1", "10.0.0.1")
    await records.vm_destroyed("a", "vm-1")
    await records.vm_cloned("b", "vm-2", "10.0.0.2")
    await records.vm_destroyed("b", "vm-2")
    for pool in ("c", "d", "nosuch"):  # dynamic-dns, no dns_plugin, unknown pool: nothing to do
        await records.vm_cloned(pool, "vm-3", "10.0.0.3")
        await records.vm_destroyed(pool, "vm-3")

    corp, lab = sorted(built, key=lambda r: r.config.name)
    assert corp.config.options["zone"] == "z1"
    assert corp.calls == [("create", "vm-1", "10.0.0.1"), ("delete", "vm-1.corp.example")]
    assert lab.calls == [("create", "vm-2", "10.0.0.2"), ("delete", "vm-2.lab.example")]
    assert [records.managed(p) for p in "abcd"] == [True, True, False, False]


def test_unknown_dns_class_of_a_used_config_stops_startup() -> None:
    with pytest.raises(ConfigError, match=r":dns_configs: corp: dns_class: 'recording' is not available"):
        DnsRecords(settings())
    # an entry no pool uses is never built
    DnsRecords(settings(spare={"dns_class": "nosuch"}), {**DNS_CLASSES, "recording": Recording})


async def test_dynamic_dns_is_a_no_op() -> None:
    plugin = DNS_CLASSES["dynamic-dns"](DnsSettings(name="dyn", dns_class="dynamic-dns"))
    assert isinstance(plugin, DynamicDns)
    await plugin.create_or_replace_record("vm", "10.0.0.1")  # nothing to publish, nothing raised
    await plugin.delete_record("vm.example.com")
