"""DNS plugins: the port the workers call to publish and withdraw VM records (vmpooler's ``Dns::Base``).

A pool names a ``:dns_configs:`` entry in ``dns_plugin``; that entry's ``dns_class`` picks the plugin
and its ``domain`` makes the FQDNs. ``dynamic-dns`` (the VMs register themselves) manages no records,
as in vmpooler. vmpooler calls ``create_or_replace_record`` with the short name after a clone and
``delete_record`` with the FQDN on destroy; we keep those arguments and add the IP address, which
vmpooler's plugins read back from Redis.

Plugins must be idempotent (calls are at-least-once: a handler that crashed is redelivered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from .settings import ConfigError, DnsSettings, Settings

__all__ = ["DNS_CLASSES", "DnsFactory", "DnsPlugin", "DnsRecords", "DynamicDns"]

log = logging.getLogger(__name__)


class DnsPlugin(Protocol):
    """Manages the DNS records of VMs in one ``:dns_configs:`` entry's domain."""

    async def create_or_replace_record(self, hostname: str, ip: str) -> None:
        """Point ``<hostname>.<domain>`` at ``ip``, replacing any record of that name.

        Args:
            hostname: the VM's short name (vmpooler passes the short name here).
            ip: the address the provider reported for the VM.

        Raises:
            Exception: the record could not be written; the caller retries (redelivery).
        """
        ...

    async def delete_record(self, fqdn: str) -> None:
        """Remove the record of ``fqdn``; succeed when there is none.

        Args:
            fqdn: ``<vm>.<domain>`` (vmpooler passes the FQDN here).

        Raises:
            Exception: the record could not be removed; the caller retries (redelivery).
        """
        ...


class DynamicDns:
    """``dynamic-dns``: the VMs register themselves; nothing to do."""

    async def create_or_replace_record(self, hostname: str, ip: str) -> None:
        return None

    async def delete_record(self, fqdn: str) -> None:
        return None


DnsFactory = Callable[[DnsSettings], DnsPlugin]
"""Builds a plugin from its ``:dns_configs:`` entry (``domain`` and plugin-specific ``options``)."""

DNS_CLASSES: Mapping[str, DnsFactory] = {"dynamic-dns": lambda _: DynamicDns()}
"""The plugins available by ``dns_class``; the composition root may pass more."""


class DnsRecords:
    """Pool → its DNS plugin and domain: what the workers call after a clone and on destroy.

    One plugin per ``:dns_configs:`` entry that a pool uses (vmpooler shares one object per class,
    which mixes up the domains of two entries of the same class).

    Args:
        settings: the configuration; ``None`` for no DNS management at all.
        classes: available plugins by ``dns_class``.

    Raises:
        ConfigError: a pool's DNS config names a class that is not available.
    """

    def __init__(
        self, settings: Settings | None = None, classes: Mapping[str, DnsFactory] = DNS_CLASSES
    ) -> None:
        plugins: dict[str, DnsPlugin | None] = {}
        self._pools: dict[str, tuple[DnsPlugin, str]] = {}
        if settings is None:
            return
        for pool in settings.pools:
            config = settings.dns_configs.get(pool.dns_plugin) if pool.dns_plugin else None
            if config is None:
                continue
            if config.name not in plugins:
                plugins[config.name] = self._build(config, classes)
            plugin = plugins[config.name]
            if plugin is not None:
                self._pools[pool.name] = (plugin, config.domain)

    @staticmethod
    def _build(config: DnsSettings, classes: Mapping[str, DnsFactory]) -> DnsPlugin | None:
        if config.dns_class == "dynamic-dns":
            return None  # as vmpooler: calls are skipped altogether
        factory = classes.get(config.dns_class)
        if factory is None:
            available = ", ".join(sorted(classes)) or "none"
            raise ConfigError(
                f":dns_configs: {config.name}: dns_class: {config.dns_class!r} is not available ({available})"
            )
        return factory(config)

    def managed(self, pool: str) -> bool:
        """Whether ``pool``'s records are managed by a plugin."""
        return pool in self._pools

    async def vm_cloned(self, pool: str, vm: str, ip: str) -> None:
        """Publish ``vm``'s record after its clone (no-op without a managing plugin)."""
        found = self._pools.get(pool)
        if found is not None:
            await found[0].create_or_replace_record(vm, ip)

    async def vm_destroyed(self, pool: str, vm: str) -> None:
        """Withdraw ``vm``'s record when it is destroyed (no-op without a managing plugin)."""
        found = self._pools.get(pool)
        if found is not None:
            plugin, domain = found
            await plugin.delete_record(f"{vm}.{domain}" if domain else vm)
