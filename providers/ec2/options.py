"""The EC2 provider's options: its ``:providers:`` block (vmpooler's ``ec2``/``aws`` keys and ours) and the
per-pool overrides, validated once so a wrong value stops startup naming the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.guard import RESILIENCE_KEYS

__all__ = ["POOL_KEYS", "PROVIDER_KEYS", "Credentials", "Ec2Options", "PoolSpec", "Secret"]


class Secret:
    """A credential that never shows itself in ``repr``/``str`` (logs, tracebacks, settings dumps)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Credentials:
    """Keys given in the YAML (or vmpooler's ``ABS_AWS_*`` variables); empty means boto3's standard chain."""

    access_key_id: str = ""
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str = ""

    def session_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.session.Session``."""
        given: dict[str, str] = {}
        if self.profile:
            given["profile_name"] = self.profile
        if self.access_key_id and self.secret_access_key is not None:
            given["aws_access_key_id"] = self.access_key_id
            given["aws_secret_access_key"] = self.secret_access_key.reveal()
            if self.session_token is not None:
                given["aws_session_token"] = self.session_token.reveal()
        return given


def _str(options: Mapping[str, Any], key: str, default: str = "") -> str:
    value = options.get(key)
    if value is None:
        return default
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"ec2 provider option {key!r} must be a string, got {value!r}")
    return str(value)


def _number(options: Mapping[str, Any], key: str, default: float, *, integer: bool = False) -> float:
    value = options.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():  # vmpooler's example quotes volume_size
        value = int(value)
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        kind = "a non-negative integer" if integer else "a non-negative number"
        raise ValueError(f"ec2 provider option {key!r} must be {kind}, got {value!r}")
    return float(value)


def _strings(options: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = options.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"ec2 provider option {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _tags(options: Mapping[str, Any], key: str = "tags") -> dict[str, str]:
    value = options.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"ec2 provider option {key!r} must be a mapping of tag names to values, got {value!r}"
        )
    return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True)
class PoolSpec:
    """What one pool's instances are launched with (provider values, overridden by the pool's keys)."""

    image_id: str
    instance_type: str
    zone: str = ""
    subnet_id: str = ""
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""
    volume_size: int = 0
    tags: dict[str, str] = field(default_factory=dict)


_POOL_KEYS = (
    "zone",
    "instance_type",
    "amisize",
    "subnet_id",
    "security_group_ids",
    "key_name",
    "volume_size",
)
POOL_KEYS = (*_POOL_KEYS, "tags")
"""Every pool key the provider reads from ``PoolTarget.options`` (also provider-wide defaults)."""
PROVIDER_KEYS = (
    *POOL_KEYS,
    *RESILIENCE_KEYS,
    "region",
    "endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "ABS_AWS_ACCESS_KEY",
    "ABS_AWS_SECRET_KEY",
    "profile",
    "ready_check_port",
    "ready_check_timeout",
    "task_timeout",
    "quota_pause",
    "throttle_retries",
    "throttle_base",
    "wait_poll",
)
"""Every key of its ``:providers:`` block the provider reads."""


@dataclass(frozen=True)
class Ec2Options:
    """Typed provider options (see :class:`providers.ec2.Ec2Provider` for their meaning)."""

    region: str
    defaults: Mapping[str, Any]
    credentials: Credentials
    endpoint_url: str = ""
    ready_check_port: int = 22
    ready_check_timeout: float = 1.0
    task_timeout: float = 900.0
    quota_pause: float = 300.0
    throttle_retries: int = 4
    throttle_base: float = 0.2
    wait_poll: float = 2.0

    @classmethod
    def parse(cls, options: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Ec2Options:
        """Validate the provider block.

        Raises:
            ValueError: naming the first option that is missing or has a wrong type or value.
        """
        region = _str(options, "region")
        if not region:
            raise ValueError("ec2 provider option 'region' is required")
        defaults = {key: options[key] for key in POOL_KEYS if options.get(key) is not None}
        spec_of(defaults, {}, "")  # checks the provider-wide values once
        return cls(
            region=region,
            defaults=defaults,
            credentials=_credentials(options, environ),
            endpoint_url=_str(options, "endpoint_url"),
            ready_check_port=int(_number(options, "ready_check_port", 22, integer=True)),
            ready_check_timeout=_number(options, "ready_check_timeout", 1.0),
            task_timeout=_number(options, "task_timeout", 900.0),
            quota_pause=_number(options, "quota_pause", 300.0),
            throttle_retries=int(_number(options, "throttle_retries", 4, integer=True)),
            throttle_base=_number(options, "throttle_base", 0.2),
            wait_poll=_number(options, "wait_poll", 2.0),
        )

    def spec(self, pool: str, template: str, pool_options: Mapping[str, Any]) -> PoolSpec:
        """The launch settings of ``pool`` (``template`` is its AMI).

        Raises:
            ValueError: a pool key has a wrong type, or no AMI or instance type is set.
        """
        return spec_of(self.defaults, pool_options, template, pool=pool)


def spec_of(
    defaults: Mapping[str, Any], pool_options: Mapping[str, Any], template: str, *, pool: str = ""
) -> PoolSpec:
    merged = {**defaults, **{k: v for k, v in pool_options.items() if k in _POOL_KEYS and v is not None}}
    tags = {**_tags(defaults), **_tags(pool_options)}
    instance_type = _str(merged, "instance_type") or _str(merged, "amisize")
    if pool and not template:
        raise ValueError(f"pool {pool}: an EC2 pool needs a template (the AMI id)")
    if pool and not instance_type:
        raise ValueError(f"pool {pool}: no instance_type (vmpooler's amisize) in the pool or the provider")
    return PoolSpec(
        image_id=template,
        instance_type=instance_type,
        zone=_str(merged, "zone"),
        subnet_id=_str(merged, "subnet_id"),
        security_group_ids=_strings(merged, "security_group_ids"),
        key_name=_str(merged, "key_name"),
        volume_size=int(_number(merged, "volume_size", 0, integer=True)),
        tags=tags,
    )


def _credentials(options: Mapping[str, Any], environ: Mapping[str, str]) -> Credentials:
    key = _str(options, "aws_access_key_id") or _str(options, "ABS_AWS_ACCESS_KEY")
    secret = _str(options, "aws_secret_access_key") or _str(options, "ABS_AWS_SECRET_KEY")
    if not key and not secret:  # vmpooler's variables, before boto3's own chain
        key, secret = environ.get("ABS_AWS_ACCESS_KEY", ""), environ.get("ABS_AWS_SECRET_KEY", "")
    if bool(key) != bool(secret):
        raise ValueError("ec2 provider: give both aws_access_key_id and aws_secret_access_key, or neither")
    token = _str(options, "aws_session_token")
    return Credentials(
        access_key_id=key,
        secret_access_key=Secret(secret) if secret else None,
        session_token=Secret(token) if token else None,
        profile=_str(options, "profile"),
    )
