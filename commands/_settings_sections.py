"""Settings sections other than ``:config:`` and ``:auth:``: pools, providers, DNS, Redis, metrics, limits.

Times are in the units vmpooler uses for the same key (documented per field).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from commands._settings_keys import YamlShape

__all__ = [
    "ConfigError",
    "DnsSettings",
    "GraphiteSettings",
    "GraphsSettings",
    "PoolSettings",
    "PrometheusSettings",
    "ProviderSettings",
    "RateLimit",
    "RateLimitSettings",
    "RedisSettings",
    "StatsdSettings",
    "TracingSettings",
]

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class ConfigError(Exception):
    """The configuration is unusable; the message is one line naming the key and what was expected."""


class _Section(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every settings struct: immutable and keyword-only."""


class PoolSettings(_Section, frozen=True):
    """One entry of ``:pools:``.

    Attributes:
        name: the pool name, unique, matching ``^[A-Za-z0-9_-]+$``.
        template: provider template or image path to clone from.
        size: target number of ready + pending VMs; 0 makes an on-demand-only pool.
        alias: alternative names a client may request (several pools may share an alias).
        alias_as_configured: ``alias`` exactly as written in the YAML (string or list), for ``/status``.
        provider: key in ``:providers:``; ``dummy`` when not given.
        dns_plugin: key in ``:dns_configs:`` whose ``domain`` makes hostnames FQDNs; empty for none.
        clone_target: cluster or placement target, the key of ``:config: backend_weight`` (global
            ``clone_target`` when not given).
        timeout: minutes a VM may stay pending before it is failed (global ``timeout`` when not given).
        timeout_notification: minutes before the pending timeout at which a warning is logged.
        ready_ttl: minutes a ready VM may wait unused before it is recycled (global ``ready_ttl``).
        check_hostname_for_mismatch: whether ready VMs whose guest hostname differs are destroyed
            (global ``check_ready_vm_hostname_for_mismatch`` when not given).
        check_loop_delay_min: per-pool override of the pool loop's shortest sleep (seconds).
        check_loop_delay_max: per-pool override of the pool loop's longest sleep (seconds).
        check_loop_delay_decay: per-pool override of the factor the sleep grows by when idle.
        options: every other key of the pool, as given (``folder``, ``datastore``, ``zone`` ...), for the
            provider.
    """

    YAML: ClassVar[YamlShape] = YamlShape(derived=frozenset({"alias_as_configured"}), rest="options")

    name: str
    template: str = ""
    size: NonNegative = 0
    alias: tuple[str, ...] = ()
    alias_as_configured: str | list[str] | None = None
    provider: str = "dummy"
    dns_plugin: str = ""
    clone_target: str = ""
    timeout: NonNegative = 15
    timeout_notification: NonNegative = 5
    ready_ttl: NonNegative = 60
    check_hostname_for_mismatch: bool = True
    check_loop_delay_min: NonNegative | None = None
    check_loop_delay_max: NonNegative | None = None
    check_loop_delay_decay: Annotated[float, msgspec.Meta(gt=0)] | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class ProviderSettings(_Section, frozen=True):
    """One entry of ``:providers:``.

    Attributes:
        name: the key under ``:providers:`` (what pools name in ``provider``).
        provider_class: which implementation runs it; defaults to ``name``.
        options: every key of the provider block as given (``server``, ``connection_pool_size``, dummy
            knobs such as ``createvm_max_time`` ...).
    """

    YAML: ClassVar[YamlShape] = YamlShape(
        # provider_class is resolved from the block (or its name); the block keeps the key as written
        derived=frozenset({"name", "provider_class"}),
        rest="options",
        # read from ``options`` by the startup purge (commands/purge.py), whatever the provider class
        renamed={
            "purge_unconfigured_folders": "purge_unconfigured_resources",
            "folder_whitelist": "resources_allowlist",
        },
        also=frozenset({"provider_class", "purge_unconfigured_resources", "resources_allowlist"}),
    )

    name: str
    provider_class: str
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class DnsSettings(_Section, frozen=True):
    """One entry of ``:dns_configs:``.

    Attributes:
        name: the key under ``:dns_configs:`` (what pools name in ``dns_plugin``).
        dns_class: the plugin; ``dynamic-dns`` means no record management. Defaults to ``name``.
        domain: domain appended to VM names to make the FQDNs returned by the API.
        options: every key of the block as given, for the plugin.
    """

    YAML: ClassVar[YamlShape] = YamlShape(derived=frozenset({"name"}), rest="options")

    name: str
    dns_class: str
    domain: str = ""
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class RedisSettings(_Section, frozen=True):
    """The ``:redis:`` section.

    Attributes:
        url: full connection URL (``redis://...``, ``rediss://...``); wins over ``server``.
        server: Redis host; with neither ``url`` nor ``server`` an embedded server is started.
        port: Redis port.
        password: password (``AUTH``).
        username: ACL user name.
        data_ttl: hours VM metadata is kept after the VM is destroyed or failed.
        connection_pool_size: connections per process.
        connection_pool_timeout: seconds to wait for a free connection.
        reconnect_attempts: connection retries before giving up.
        prefix: prefix of every key we write, so installations and tests can share one Redis.
        data_dir: directory where the embedded server keeps its append-only file.
        startup_timeout: seconds every role waits for Redis to answer at start-up (retrying, and
            logging each failure) before it exits with status 2.
        cluster: the server is a node of a Redis Cluster (any node will do; the client finds the
            others and follows slot moves and fail-overs).
    """

    YAML: ClassVar[YamlShape] = YamlShape(
        ignored={
            key: "vmpooler's example file lists it here, but it is read under :config: only"
            for key in ("dlq_enabled", "dlq_ttl", "dlq_max_entries")
        }
    )

    url: str | None = None
    server: str | None = None
    port: Port = 6379
    password: str | None = None
    username: str | None = None
    data_ttl: NonNegative = 168
    connection_pool_size: Positive = 10
    connection_pool_timeout: NonNegative = 5
    reconnect_attempts: NonNegative = 10
    prefix: Annotated[str, msgspec.Meta(min_length=1)] = "vmpooler"
    data_dir: str = "vmpooler-data"
    startup_timeout: NonNegative = 30
    cluster: bool = False

    @property
    def embedded(self) -> bool:
        """Whether no Redis is configured, so the service runs its own ``redis-server``."""
        return not self.url and not self.server

    def connection_url(self) -> str | None:
        """Return ``url``, or one built from ``server``/``port``/credentials; ``None`` when embedded."""
        if self.url:
            return self.url
        if not self.server:
            return None
        from urllib.parse import quote

        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        return f"redis://{auth}{self.server}:{self.port}/0"


class StatsdSettings(_Section, frozen=True):
    """The ``:statsd:`` section (UDP).

    Attributes:
        server: statsd host.
        prefix: prefix of every metric name.
        port: statsd UDP port.
    """

    server: str
    prefix: str = "vmpooler"
    port: Port = 8125


class GraphiteSettings(_Section, frozen=True):
    """The ``:graphite:`` section (plaintext protocol over TCP).

    Attributes:
        server: Graphite (carbon) host.
        prefix: prefix of every metric name.
        port: carbon plaintext port.
    """

    server: str
    prefix: str = "vmpooler"
    port: Port = 2003


class PrometheusSettings(_Section, frozen=True):
    """The ``:prometheus:`` section.

    Attributes:
        prefix: value of the ``vmpooler_instance`` label.
        prometheus_prefix: prefix of every metric name.
        prometheus_endpoint: HTTP path serving the metrics.
    """

    prefix: str = "vmpooler"
    prometheus_prefix: str = "vmpooler"
    prometheus_endpoint: str = "/prometheus"


class GraphsSettings(_Section, frozen=True):
    """The ``:graphs:`` section: a Graphite render host for the dashboard's history.

    Attributes:
        server: Graphite web host.
        prefix: metric prefix used when querying it.
    """

    server: str = ""
    prefix: str = "vmpooler"


class TracingSettings(_Section, frozen=True):
    """The ``:tracing:`` section.

    Attributes:
        enabled: whether traces are exported.
        jaeger_host: Jaeger collector endpoint.
    """

    enabled: bool = False
    jaeger_host: str = "http://localhost:14268/api/traces"


class RateLimit(_Section, frozen=True):
    """One rate-limit class.

    Attributes:
        limit: requests allowed per period.
        period: window length in seconds.
    """

    limit: NonNegative
    period: Positive = 60


class RateLimitSettings(_Section, frozen=True):
    """The ``:rate_limits:`` section (used when ``:config: rate_limiting_enabled`` is true).

    Attributes:
        global_per_ip: requests without a token, per client IP.
        authenticated: requests with a token, per token.
        vm_creation: POSTs under ``/vm`` and ``/ondemandvm``, per client.
        vm_deletion: DELETEs under ``/vm``, per client.
    """

    global_per_ip: RateLimit = RateLimit(limit=100)
    authenticated: RateLimit = RateLimit(limit=500)
    vm_creation: RateLimit = RateLimit(limit=20)
    vm_deletion: RateLimit = RateLimit(limit=50)
