"""Build each settings section from the normalised YAML document (see ``vmpooler.config``)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from commands.settings import (
    DUMMY_PROVIDER,
    AuthSettings,
    ConfigError,
    DnsSettings,
    GlobalSettings,
    PoolSettings,
    ProviderSettings,
    RateLimitSettings,
    yaml_keys,
)
from vmpooler._config_errors import convert, key, show

__all__ = ["build_auth", "build_dns", "build_global", "build_pools", "build_providers", "build_rate_limits"]

_POOL_NAME = re.compile(r"[A-Za-z0-9_-]+")
_GLOBAL_FIELDS = yaml_keys(GlobalSettings) - GlobalSettings.YAML.renamed.keys()
_POOL_FIELDS = yaml_keys(PoolSettings) - {"alias"}  # the alias is read by _aliases


def mapping(value: Any, where: str, expected: str = "a mapping") -> dict[str, Any]:
    """Return ``value`` as a dict (``None`` is empty); raise ``ConfigError`` for anything else."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} expected {expected}, got {show(value)}")
    return dict(value)


def build_global(raw: Any) -> GlobalSettings:
    """Decode ``:config:``; unknown keys are kept in ``extra``, deprecated spellings are mapped."""
    body = mapping(raw, ":config:")
    for old, new in GlobalSettings.YAML.renamed.items():
        if old in body:
            value = body.pop(old)
            body.setdefault(new, value)
    extra = body.get("extra_config")
    if isinstance(extra, str):
        body["extra_config"] = [part.strip() for part in extra.split(",") if part.strip()]
    known = {name: value for name, value in body.items() if name in _GLOBAL_FIELDS}
    known["extra"] = {name: value for name, value in body.items() if name not in _GLOBAL_FIELDS}
    return convert(known, GlobalSettings, ":config:")


def build_dns(raw: Any) -> dict[str, DnsSettings]:
    """Decode ``:dns_configs:``; ``dns_class`` defaults to the entry's key."""
    configs: dict[str, DnsSettings] = {}
    for name, block in mapping(raw, ":dns_configs:", "a mapping of DNS config names").items():
        where = f":dns_configs: {key(name)}:"
        body = mapping(block, where)
        entry = {
            "name": name,
            "dns_class": body.get("dns_class", name),
            "domain": body.get("domain") or "",
            "options": body,
        }
        configs[name] = convert(entry, DnsSettings, where)
    return configs


def build_providers(
    raw: Any, legacy_vsphere: Any, known_classes: Collection[str]
) -> dict[str, ProviderSettings]:
    """Decode ``:providers:`` (plus a legacy top-level ``:vsphere:``); ``dummy`` always exists."""
    blocks = mapping(raw, ":providers:", "a mapping of provider names")
    if isinstance(legacy_vsphere, Mapping):
        blocks.setdefault("vsphere", legacy_vsphere)
    known = {cls.casefold(): cls for cls in (*known_classes, "dummy")}
    providers: dict[str, ProviderSettings] = {}
    for name, block in blocks.items():
        where = f":providers: {key(name)}:"
        body = mapping(block, where)
        wanted = body.get("provider_class", name)
        if not isinstance(wanted, str):
            raise ConfigError(f"{where} provider_class: expected a string, got {show(wanted)}")
        cls = known.get(wanted.casefold())
        if cls is None:
            raise ConfigError(
                f"{where} provider_class: unknown provider class {wanted!r} "
                f"(known: {', '.join(sorted(set(known.values())))})"
            )
        providers[name] = ProviderSettings(name=name, provider_class=cls, options=body)
    providers.setdefault("dummy", DUMMY_PROVIDER)
    return providers


def build_pools(
    raw: Any,
    config: GlobalSettings,
    providers: Mapping[str, ProviderSettings],
    dns: Mapping[str, DnsSettings],
) -> tuple[PoolSettings, ...]:
    """Decode ``:pools:`` and check names, providers and DNS configs they refer to."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f":pools: expected a list of pools, got {show(raw)}")
    pools: list[PoolSettings] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        pool = _pool(entry, index, config)
        where = f":pools: {pool.name}:"
        if pool.name in seen:
            raise ConfigError(f"{where} name: duplicate pool name (pool names must be unique)")
        if pool.provider not in providers:
            raise ConfigError(
                f"{where} provider: {pool.provider!r} is not configured under :providers: "
                f"(configured: {', '.join(providers)})"
            )
        if pool.dns_plugin and pool.dns_plugin not in dns:
            raise ConfigError(
                f"{where} dns_plugin: {pool.dns_plugin!r} is not configured under :dns_configs:"
            )
        seen.add(pool.name)
        pools.append(pool)
    return tuple(pools)


def _pool(entry: Any, index: int, config: GlobalSettings) -> PoolSettings:
    body = mapping(entry, f":pools: [{index}]:", "a mapping with at least a name")
    name = body.get("name")
    if name is None:
        raise ConfigError(f":pools: [{index}]: missing required key 'name'")
    if not isinstance(name, str) or not _POOL_NAME.fullmatch(name):
        raise ConfigError(
            f":pools: [{index}]: name: expected letters, digits, '-' and '_' only, got {show(name)}"
        )
    where = f":pools: {name}:"
    template = body.get("template")
    if template is None:
        raise ConfigError(f"{where} missing required key 'template' (what the pool's VMs are cloned from)")
    if isinstance(template, str) and not template.strip():
        raise ConfigError(f"{where} template: expected a non-empty string, got {show(template)}")
    if body.get("provider") is None:
        body.pop("provider", None)
    fields = {name: value for name, value in body.items() if name in _POOL_FIELDS}
    fields.setdefault("timeout", config.timeout)
    fields.setdefault("timeout_notification", config.timeout_notification)
    fields.setdefault("ready_ttl", config.ready_ttl)
    fields.setdefault("clone_target", config.clone_target)
    fields.setdefault("check_hostname_for_mismatch", config.check_ready_vm_hostname_for_mismatch)
    fields["alias"], fields["alias_as_configured"] = _aliases(body.get("alias"), where)
    fields["options"] = {name: value for name, value in body.items() if name not in _POOL_FIELDS | {"alias"}}
    return convert(fields, PoolSettings, where)


def _aliases(raw: Any, where: str) -> tuple[list[str], str | list[str] | None]:
    """Accept an alias as a string or a list of strings (vmpooler crashes on strings; we do not)."""
    if raw is None or raw == "" or raw == []:
        return [], None
    if isinstance(raw, str):
        return [raw], raw
    if isinstance(raw, list) and all(isinstance(item, str) and item for item in raw):
        return list(dict.fromkeys(raw)), list(raw)
    raise ConfigError(f"{where} alias: expected a name or a list of names, got {show(raw)}")


def build_auth(raw: Any) -> AuthSettings | None:
    """Decode ``:auth:`` (absent or empty turns authentication off)."""
    if not raw:
        return None
    body = mapping(raw, ":auth:")
    if isinstance(body.get("admins"), str):
        body["admins"] = [body["admins"]]
    if "ldap" in body:
        body["ldap"] = _ldap(mapping(body["ldap"], ":auth: ldap:"))
    auth = convert(body, AuthSettings, ":auth:")
    if auth.provider == "ldap" and (auth.ldap is None or not auth.ldap.host):
        raise ConfigError(":auth: ldap: host: required when the auth provider is ldap")
    return auth


def _ldap(body: dict[str, Any]) -> dict[str, Any]:
    for field in ("base", "user_object"):
        if isinstance(body.get(field), str):
            body[field] = [body[field]]
    encryption = body.get("encryption")
    if isinstance(encryption, Mapping):
        encryption = dict(encryption)
        method = encryption.get("method")
        if isinstance(method, str):
            encryption["method"] = method.lstrip(":")
        body["encryption"] = encryption or None
    return body


def build_rate_limits(raw: Any) -> RateLimitSettings:
    """Decode ``:rate_limits:``; each class given is merged over that class's defaults."""
    defaults = msgspec.to_builtins(RateLimitSettings())
    body = mapping(raw, ":rate_limits:")
    merged = {
        name: {**defaults[name], **value} if name in defaults and isinstance(value, Mapping) else value
        for name, value in body.items()
    }
    return convert(merged, RateLimitSettings, ":rate_limits:")
