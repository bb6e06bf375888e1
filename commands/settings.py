"""Typed settings: vmpooler's YAML configuration decoded into frozen structs (the config contract).

``vmpooler.config.load_settings`` builds a :class:`Settings` from YAML and the environment; everything
else reads it. Lookups by pool name or alias are O(1): the indexes are computed once per instance.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import ClassVar, Literal

import msgspec

from commands._settings_auth import AuthSettings, LdapEncryption, LdapServiceAccount, LdapSettings
from commands._settings_global import GlobalSettings, HealthThresholds
from commands._settings_keys import YamlShape, shape_of, yaml_keys
from commands._settings_sections import (
    ConfigError,
    DnsSettings,
    GraphiteSettings,
    GraphsSettings,
    PoolSettings,
    PrometheusSettings,
    ProviderSettings,
    RateLimit,
    RateLimitSettings,
    RedisSettings,
    StatsdSettings,
    TracingSettings,
)

__all__ = [
    "DUMMY_PROVIDER",
    "AuthSettings",
    "ConfigError",
    "DnsSettings",
    "GlobalSettings",
    "GraphiteSettings",
    "GraphsSettings",
    "HealthThresholds",
    "LdapEncryption",
    "LdapServiceAccount",
    "LdapSettings",
    "PoolSettings",
    "PrometheusSettings",
    "ProviderSettings",
    "RateLimit",
    "RateLimitSettings",
    "RedisSettings",
    "Settings",
    "StatsdSettings",
    "TracingSettings",
    "YamlShape",
    "shape_of",
    "yaml_keys",
]

DUMMY_PROVIDER = ProviderSettings(name="dummy", provider_class="dummy")
"""The simulated provider, always available even when ``:providers:`` does not list it."""


def _default_providers() -> dict[str, ProviderSettings]:
    return {"dummy": DUMMY_PROVIDER}


class Settings(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """The whole configuration.

    ``dict=True`` gives instances a ``__dict__`` so the lookup indexes below can be cached on a frozen
    struct; they are not fields, so they are neither encoded nor compared.

    Attributes:
        config: the ``:config:`` section.
        pools: ``:pools:`` in configured order.
        providers: ``:providers:`` by name; always contains ``dummy``.
        redis: the ``:redis:`` section.
        dns_configs: ``:dns_configs:`` by name.
        auth: the ``:auth:`` section; ``None`` means authentication is off.
        statsd: the ``:statsd:`` section, if any.
        graphite: the ``:graphite:`` section, if any.
        prometheus: the ``:prometheus:`` section, if any.
        graphs: the ``:graphs:`` section (dashboard history host), if any.
        tracing: the ``:tracing:`` section.
        tagfilter: ``tag -> regular expression``; a tag value is replaced by the first group of its match.
        rate_limits: the ``:rate_limits:`` section merged over the defaults.
        source: where the configuration came from (a file path, or ``VMPOOLER_CONFIG``), for logs.
    """

    # unknown top-level sections are warned about: a file may be shared with other tools
    YAML: ClassVar[YamlShape] = YamlShape(
        derived=frozenset({"source"}), open=True, also=frozenset({"vsphere"})
    )

    config: GlobalSettings = GlobalSettings()
    pools: tuple[PoolSettings, ...] = ()
    providers: dict[str, ProviderSettings] = msgspec.field(default_factory=_default_providers)
    redis: RedisSettings = RedisSettings()
    dns_configs: dict[str, DnsSettings] = msgspec.field(default_factory=dict)
    auth: AuthSettings | None = None
    statsd: StatsdSettings | None = None
    graphite: GraphiteSettings | None = None
    prometheus: PrometheusSettings | None = None
    graphs: GraphsSettings | None = None
    tracing: TracingSettings = TracingSettings()
    tagfilter: dict[str, str] = msgspec.field(default_factory=dict)
    rate_limits: RateLimitSettings = RateLimitSettings()
    source: str = ""

    @cached_property
    def _pool_index(self) -> dict[str, PoolSettings]:
        return {pool.name: pool for pool in self.pools}

    @cached_property
    def _alias_index(self) -> dict[str, tuple[str, ...]]:
        index: dict[str, list[str]] = {}
        for pool in self.pools:
            for alias in pool.alias:
                members = index.setdefault(alias, [])
                if pool.name not in members:
                    members.append(pool.name)
        return {alias: tuple(names) for alias, names in index.items()}

    @cached_property
    def _candidate_index(self) -> dict[str, tuple[str, ...]]:
        index: dict[str, tuple[str, ...]] = {name: (name,) for name in self._pool_index}
        for alias, names in self._alias_index.items():
            head = index.get(alias, ())
            index[alias] = head + tuple(name for name in names if name not in head)
        return index

    @cached_property
    def _domain_index(self) -> dict[str, str | None]:
        index: dict[str, str | None] = {}
        for pool in self.pools:
            dns = self.dns_configs.get(pool.dns_plugin) if pool.dns_plugin else None
            index[pool.name] = dns.domain if dns is not None and dns.domain else None
        return index

    @cached_property
    def pool_names(self) -> tuple[str, ...]:
        """Names of the configured pools, in configured order."""
        return tuple(pool.name for pool in self.pools)

    @cached_property
    def tagfilter_patterns(self) -> dict[str, re.Pattern[str]]:
        """``:tagfilter:`` compiled: ``tag -> pattern``."""
        return {tag: re.compile(pattern) for tag, pattern in self.tagfilter.items()}

    @property
    def metrics_backend(self) -> Literal["statsd", "graphite", "prometheus"] | None:
        """Which metrics sink is configured; the first of statsd, graphite, prometheus present wins."""
        if self.statsd is not None:
            return "statsd"
        if self.graphite is not None:
            return "graphite"
        if self.prometheus is not None:
            return "prometheus"
        return None

    def pool(self, name: str) -> PoolSettings | None:
        """Return the pool called ``name`` (not an alias), or ``None``."""
        return self._pool_index.get(name)

    def aliases(self) -> dict[str, tuple[str, ...]]:
        """Return ``alias -> pool names`` (configured order); several pools may share an alias."""
        return dict(self._alias_index)

    def candidates(self, requested: str) -> tuple[str, ...]:
        """Return the pools that can serve a request for ``requested``.

        The pool called ``requested`` comes first if there is one, then the pools aliased by it in
        configured order. Empty when ``requested`` is neither a pool nor an alias.
        """
        return self._candidate_index.get(requested, ())

    def domain_for(self, pool: str) -> str | None:
        """Return the DNS domain of ``pool`` (via its ``dns_plugin``), or ``None`` if it has none."""
        return self._domain_index.get(pool)

    def provider_for(self, pool: str) -> ProviderSettings:
        """Return the provider settings serving ``pool``.

        Raises:
            KeyError: ``pool`` is not a configured pool.
        """
        found = self._pool_index.get(pool)
        if found is None:
            raise KeyError(pool)
        provider = self.providers.get(found.provider)
        if provider is None and found.provider == "dummy":
            return DUMMY_PROVIDER
        if provider is None:
            raise KeyError(found.provider)
        return provider
