"""Environment overrides of the YAML configuration (vmpooler's environment variables, §3.8).

Overrides are applied to the key-normalised document before it is decoded, so the same validation
runs on both sources. Divergences from vmpooler, on purpose: an integer such as ``12abc`` is an error
(vmpooler crashes), and booleans are parsed (vmpooler treats ``"false"`` as true). Empty values are
ignored, as if unset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from commands.settings import ConfigError

__all__ = ["apply_env", "env_bool", "env_int"]

_INT_CONFIG = (
    "task_limit",
    "ondemand_clone_limit",
    "max_ondemand_instances_per_request",
    "migration_limit",
    "vm_checktime",
    "vm_lifetime",
    "max_lifetime_upper_limit",
    "ready_ttl",
    "ondemand_request_ttl",
    "timeout",
    "timeout_notification",
    "vm_lifetime_auth",
    "max_tries",
    "retry_factor",
)
_STR_CONFIG = ("prefix", "logfile", "site_name", "clone_target")
_BOOL_CONFIG = (
    "create_folders",
    "create_linked_clones",
    "experimental_features",
    "usage_stats",
    "request_logger",
    "create_template_delta_disks",
    "purge_unconfigured_resources",
)
_REDIS = {
    "REDIS_URL": ("url", str),
    "REDIS_SERVER": ("server", str),
    "REDIS_PORT": ("port", int),
    "REDIS_PASSWORD": ("password", str),
    "REDIS_USERNAME": ("username", str),
    "REDIS_DATA_TTL": ("data_ttl", int),
    "REDIS_CONNECTION_POOL_SIZE": ("connection_pool_size", int),
    "REDIS_CONNECTION_POOL_TIMEOUT": ("connection_pool_timeout", int),
    "REDIS_RECONNECT_ATTEMPTS": ("reconnect_attempts", int),
    "REDIS_STARTUP_TIMEOUT": ("startup_timeout", int),
    "REDIS_CLUSTER": ("cluster", bool),
}
_LDAP = {
    "LDAP_HOST": ("host", str),
    "LDAP_PORT": ("port", int),
    "LDAP_BASE": ("base", str),
    "LDAP_USER_OBJECT": ("user_object", str),
}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_WHOLE = re.compile(r"\s*[+-]?\d+\s*")


def env_int(name: str, raw: str) -> int | None:
    """Parse an integer variable: ``None`` (ignored) without any digit, an error when not a whole number."""
    if not any(ch.isdigit() for ch in raw):
        return None
    if not _WHOLE.fullmatch(raw):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
    return int(raw)


def env_bool(name: str, raw: str) -> bool:
    """Parse a boolean variable (``true/false``, ``yes/no``, ``on/off``, ``1/0``, any case)."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def apply_env(doc: dict[str, Any], env: Mapping[str, str]) -> None:
    """Apply every supported environment variable to the normalised document ``doc`` in place."""
    values = {name: value for name, value in env.items() if value.strip()}
    if "DOMAIN" in values:
        raise ConfigError(
            "DOMAIN: the global domain was removed in vmpooler 3; define a domain under :dns_configs: "
            "and name it in each pool's dns_plugin"
        )
    config = _section(doc, "config", create=True)
    if config is not None:
        _apply_config(config, values)
    redis = _section(doc, "redis", create=any(name in values for name in _REDIS))
    if redis is not None:
        _apply(redis, values, _REDIS)
    for kind in ("statsd", "graphite"):
        upper = kind.upper()
        section = _section(doc, kind, create=f"{upper}_SERVER" in values)
        if section is not None:
            _apply(section, values, {f"{upper}_SERVER": ("server", str), f"{upper}_PREFIX": ("prefix", str)})
            _apply(section, values, {f"{upper}_PORT": ("port", int)})
    tracing_vars = {
        "VMPOOLER_TRACING_ENABLED": ("enabled", bool),
        "VMPOOLER_TRACING_JAEGER_HOST": ("jaeger_host", str),
    }
    tracing = _section(doc, "tracing", create=any(name in values for name in tracing_vars))
    if tracing is not None:
        _apply(tracing, values, tracing_vars)
    auth = _section(doc, "auth", create="AUTH_PROVIDER" in values)
    if auth is not None:
        _apply(auth, values, {"AUTH_PROVIDER": ("provider", str)})
        ldap = _section(auth, "ldap", create=any(name in values for name in _LDAP))
        if ldap is not None:
            _apply(ldap, values, _LDAP)


def _apply_config(config: dict[str, Any], values: Mapping[str, str]) -> None:
    _apply(config, values, {key.upper(): (key, int) for key in _INT_CONFIG})
    _apply(config, values, {key.upper(): (key, str) for key in _STR_CONFIG})
    _apply(config, values, {key.upper(): (key, bool) for key in _BOOL_CONFIG})
    if "PURGE_UNCONFIGURED_RESOURCES" not in values:
        deprecated = {"PURGE_UNCONFIGURED_FOLDERS": ("purge_unconfigured_resources", bool)}
        _apply(config, values, deprecated)
    if "VMPOOLER_DEBUG" in values:
        config["debug"] = values["VMPOOLER_DEBUG"].strip().lower() not in _FALSE


_PARSERS: dict[type, Callable[[str, str], Any]] = {
    int: env_int,
    bool: env_bool,
    str: lambda _name, raw: raw,
}


def _apply(section: dict[str, Any], values: Mapping[str, str], table: Mapping[str, tuple[str, type]]) -> None:
    for name, (key, kind) in table.items():
        if name in values:
            parsed = _PARSERS[kind](name, values[name])
            if parsed is not None:
                section[key] = parsed


def _section(doc: dict[str, Any], name: str, *, create: bool) -> dict[str, Any] | None:
    """Return ``doc[name]`` if it is a mapping (created when asked); other values are left for validation."""
    current = doc.get(name)
    if current is None and create:
        current = doc[name] = {}
    return current if isinstance(current, dict) else None
