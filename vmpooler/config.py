"""Load the configuration: vmpooler's YAML (file or ``VMPOOLER_CONFIG``) plus environment → ``Settings``.

Source order: the ``VMPOOLER_CONFIG`` variable (a whole YAML document) wins; else the ``path``
argument; else ``VMPOOLER_CONFIG_FILE``; else ``vmpooler.yaml`` in the working directory. In file mode,
``EXTRA_CONFIG`` (or ``:config: extra_config``) names comma-separated files deep-merged in: values
already set win, lists are unioned (so pools of several files combine).

Keys may be written as Ruby symbols (``:config:``, ``:user_dn``) or plainly, at every level. Anything
wrong raises :class:`~commands.settings.ConfigError` with a one-line message naming the key. Unknown
keys are checked first (:mod:`vmpooler._config_keys`): a likely typo is an error, any other unknown
key a warning (a :class:`Finding`), logged or handed to the caller.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from commands.provider import OptionKeys
from commands.settings import (
    ConfigError,
    GraphiteSettings,
    GraphsSettings,
    PrometheusSettings,
    RedisSettings,
    Settings,
    StatsdSettings,
    TracingSettings,
)
from providers.dummy import DummyProvider
from providers.ec2 import Ec2Provider
from providers.vsphere import VsphereProvider
from vmpooler._config_build import (
    build_auth,
    build_dns,
    build_global,
    build_pools,
    build_providers,
    build_rate_limits,
    mapping,
)
from vmpooler._config_env import apply_env
from vmpooler._config_errors import convert, key
from vmpooler._config_keys import Finding, check_keys

__all__ = ["ConfigError", "Finding", "deep_merge", "load_settings", "normalize_keys", "parse_settings"]

log = logging.getLogger(__name__)

PROVIDER_OPTION_KEYS: Mapping[str, OptionKeys] = {
    cls.TYPE: cls.OPTION_KEYS for cls in (DummyProvider, VsphereProvider, Ec2Provider)
}
"""The provider classes built in, and the option keys each declares it reads."""
DEFAULT_PROVIDER_CLASSES: tuple[str, ...] = tuple(PROVIDER_OPTION_KEYS)
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
T = TypeVar("T")


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    known_provider_classes: Collection[str] = DEFAULT_PROVIDER_CLASSES,
    findings: list[Finding] | None = None,
) -> Settings:
    """Read the configuration from its source (see the module docstring) and decode it.

    Args:
        path: configuration file; used when ``VMPOOLER_CONFIG`` is not set.
        env: environment to read; ``os.environ`` when ``None``.
        known_provider_classes: provider implementations available; others are refused.
        findings: where to add every unknown key found (see :func:`parse_settings`).

    Raises:
        ConfigError: no configuration was found, a file cannot be read or parsed, or a value is wrong.
    """
    env = os.environ if env is None else env
    inline = env.get("VMPOOLER_CONFIG", "")
    if inline.strip():
        document = _parse_yaml(inline, "VMPOOLER_CONFIG")
        return parse_settings(
            document,
            env=env,
            known_provider_classes=known_provider_classes,
            source="VMPOOLER_CONFIG",
            findings=findings,
        )
    chosen = _config_path(path, env)
    document = normalize_keys(_read_yaml(chosen))
    extras = _extra_files(document, env)
    for extra in extras:
        document = deep_merge(document, normalize_keys(_read_yaml(_resolve(extra, chosen))))
    if extras:
        config = document.setdefault("config", {})
        if isinstance(config, dict):
            config["extra_config"] = extras
    return parse_settings(
        document,
        env=env,
        known_provider_classes=known_provider_classes,
        source=str(chosen),
        findings=findings,
    )


def parse_settings(
    document: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    known_provider_classes: Collection[str] = DEFAULT_PROVIDER_CLASSES,
    source: str = "",
    findings: list[Finding] | None = None,
) -> Settings:
    """Decode an already loaded YAML mapping, with environment overrides applied.

    Args:
        document: the YAML document (symbol or plain keys).
        env: environment to read; ``os.environ`` when ``None``.
        known_provider_classes: provider implementations available; others are refused.
        source: where the document came from, kept in ``Settings.source`` for logs.
        findings: where to add every unknown key found, errors and warnings; when ``None``, the
            warnings are logged.

    Raises:
        ConfigError: an unknown key looks like a typo or cannot be meant for anything, a key has a
            wrong type or value, or names something that is not configured.
    """
    env = os.environ if env is None else env
    doc = normalize_keys(mapping(document, "the configuration:", "a mapping of sections"))
    _check_keys(doc, known_provider_classes, findings)
    apply_env(doc, env)
    config = build_global(doc.get("config"))
    dns = build_dns(doc.get("dns_configs"))
    providers = build_providers(doc.get("providers"), doc.get("vsphere"), known_provider_classes)
    return Settings(
        config=config,
        pools=build_pools(doc.get("pools"), config, providers, dns),
        providers=providers,
        redis=_redis(doc.get("redis")),
        dns_configs=dns,
        auth=build_auth(doc.get("auth")),
        statsd=_optional(doc, "statsd", StatsdSettings),
        graphite=_optional(doc, "graphite", GraphiteSettings),
        prometheus=_optional(doc, "prometheus", PrometheusSettings),
        graphs=_optional(doc, "graphs", GraphsSettings),
        tracing=convert(mapping(doc.get("tracing"), ":tracing:"), TracingSettings, ":tracing:"),
        tagfilter=_tagfilter(doc.get("tagfilter")),
        rate_limits=build_rate_limits(doc.get("rate_limits")),
        source=source,
    )


def _check_keys(doc: Mapping[str, Any], classes: Collection[str], findings: list[Finding] | None) -> None:
    found = check_keys(doc, {c.casefold(): PROVIDER_OPTION_KEYS.get(c) for c in (*classes, "dummy")})
    if findings is not None:
        findings.extend(found)
    else:
        for finding in found:
            if not finding.error:
                log.warning("%s", finding)
    error = next((finding for finding in found if finding.error), None)
    if error is not None:
        raise ConfigError(str(error))


def normalize_keys(value: Any) -> Any:
    """Strip one leading ``:`` (Ruby symbol) from every mapping key, at every level; keys become strings.

    When both spellings of a key are present (``:config:`` and ``config:``) their values are merged.
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key[1:] if isinstance(key, str) and key.startswith(":") else str(key)
            item = normalize_keys(item)
            out[name] = deep_merge(out[name], item) if name in out else item
        return out
    if isinstance(value, list):
        return [normalize_keys(item) for item in value]
    return value


def deep_merge(base: Any, extra: Any) -> Any:
    """Merge ``extra`` into ``base``: mappings recursively, lists unioned, otherwise ``base`` wins."""
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(base, list) and isinstance(extra, list):
        return base + [item for item in extra if item not in base]
    return base


def _config_path(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    if path is not None:
        return Path(path)
    if env.get("VMPOOLER_CONFIG_FILE", "").strip():
        return Path(env["VMPOOLER_CONFIG_FILE"])
    default = Path("vmpooler.yaml")
    if not default.is_file():
        raise ConfigError(
            f"no configuration found: set VMPOOLER_CONFIG (a YAML document) or VMPOOLER_CONFIG_FILE, "
            f"pass a file, or create vmpooler.yaml in {Path.cwd()}"
        )
    return default


def _extra_files(document: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    raw: Any = env.get("EXTRA_CONFIG", "").strip()
    if not raw:
        config = document.get("config")
        raw = config.get("extra_config") if isinstance(config, dict) else None
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return [item.strip() for item in raw if item.strip()]
    raise ConfigError(f":config: extra_config: expected comma-separated file names, got {raw!r}")


def _resolve(name: str, main: Path) -> Path:
    """An extra file is looked up as given, then next to the main configuration file."""
    candidate = Path(name)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    beside = main.parent / candidate
    return beside if beside.exists() else candidate


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); a configuration is YAML text"
        ) from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, where: str) -> Any:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(f"{where}: expected a YAML mapping of sections (:config:, :pools: ...)")
    return document


def _redis(raw: Any) -> RedisSettings:
    redis = convert(mapping(raw, ":redis:"), RedisSettings, ":redis:")
    if redis.url and not redis.url.startswith(_REDIS_SCHEMES):
        raise ConfigError(f":redis: url: expected a redis://, rediss:// or unix:// URL, got {redis.url!r}")
    return redis


def _optional(doc: Mapping[str, Any], name: str, kind: type[T]) -> T | None:
    """A section that is on when its key is present (a bare ``:prometheus:`` means all defaults)."""
    if name not in doc:
        return None
    where = f":{name}:"
    return convert(mapping(doc[name], where), kind, where)


def _tagfilter(raw: Any) -> dict[str, str]:
    filters = convert(mapping(raw, ":tagfilter:"), dict[str, str], ":tagfilter:")
    for tag, pattern in filters.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f":tagfilter: {key(tag)}: invalid regular expression {pattern!r}: {exc}"
            ) from None
    return filters
