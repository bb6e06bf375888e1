"""``vmpooler config check``: the effective configuration, secrets redacted, and every warning.

It loads the configuration as startup does (file or ``VMPOOLER_CONFIG``, extra files, environment),
checks what startup checks once the service is assembled (provider options, DNS plugins, LDAP, key
prefix; without connecting to Redis or a provider), prints the settings as YAML (or JSON) on stdout
and each unknown key on its own line on stderr. Exit code: 0 clean, 1 warnings only, 2 errors (or
warnings with ``--strict``). The printed YAML is itself a valid configuration: loading it gives the
same settings, secrets apart.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
import yaml

from commands.settings import ConfigError, Settings, shape_of

from ._output import json_printable, printable
from .config import Finding, load_settings
from .redis_client import RedisHandle
from .wiring import Service, build_authenticator

__all__ = ["REDACTED", "config_check", "redact", "render"]

REDACTED = "<redacted>"
# Until commands/redact.py (the API's allow-list) is merged: keys that name a secret, and passwords in URLs.
_SECRET = re.compile(r"pass|secret|token|credential|private|api_?key", re.IGNORECASE)


def render(value: Any) -> Any:
    """Settings as the YAML they could be loaded from: each struct's keys as its ``YAML`` shape
    declares them (``options``/``extra`` folded back into the entry, derived fields and unset
    optional values left out)."""
    if isinstance(value, msgspec.Struct):
        shape = shape_of(type(value))
        out: dict[str, Any] = {}
        for field in msgspec.structs.fields(value):
            item = getattr(value, field.name)
            if field.name in shape.derived or field.name == shape.rest or item is None:
                continue
            out[field.encode_name] = render(item)
        for name, item in (getattr(value, shape.rest) if shape.rest else {}).items():
            out.setdefault(name, render(item))
        return out
    if isinstance(value, dict):
        return {str(name): render(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item) for item in value]
    return value


def redact(value: Any) -> Any:
    """``value`` with the value of every key that names a secret replaced, and URL passwords hidden."""
    if isinstance(value, dict):
        return {
            name: REDACTED if _SECRET.search(name) and item not in (None, "") else redact(item)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return _url_without_password(value)
    return value


def _url_without_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


async def _assemble(settings: Settings) -> None:
    """What startup checks once it builds the service from the settings, without connecting to
    anything (the Redis client is never used)."""
    service = Service(settings, RedisHandle(aioredis.Redis(), "redis://unused"))
    try:
        build_authenticator(settings)
    finally:
        await service.close()


async def config_check(args: argparse.Namespace) -> int:
    """Run ``vmpooler config check``; returns the exit code (see the module docstring)."""
    findings: list[Finding] = []
    try:
        settings = load_settings(args.config, findings=findings)
        await _assemble(settings)
    except (ConfigError, ValueError) as exc:
        _report(findings)
        if not any(finding.error and str(finding) == str(exc) for finding in findings):
            print(f"vmpooler: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    doc = redact(render(settings))
    if args.format == "json":
        print(json_printable(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode()))
    else:
        print(f"# vmpooler effective configuration, from {printable(settings.source or 'defaults')}")
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    _report(findings)
    if findings and args.strict:
        return 2
    return 1 if findings else 0


def _report(findings: list[Finding]) -> None:
    for finding in findings:
        kind = "error" if finding.error else "warning"
        print(f"vmpooler: {kind}: {printable(str(finding))}", file=sys.stderr)
