"""Single-value validators: pool names, counts, hostnames, disk sizes (vmpooler's input validator)."""

from __future__ import annotations

import re

from web._validation_failure import ValidationFailure

__all__ = [
    "MAX_HOSTNAME_LENGTH",
    "MAX_POOL_NAME_LENGTH",
    "shorten_hostname",
    "validate_count",
    "validate_disk_size",
    "validate_hostname",
    "validate_pool_name",
]

MAX_HOSTNAME_LENGTH = 253
MAX_POOL_NAME_LENGTH = 100

# re.ASCII everywhere: Ruby's \d, \w and \s are ASCII-only, and with re.IGNORECASE alone Python
# would let the Kelvin sign (U+212A) pass as a "k" in a hostname.
_POOL_NAME = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII | re.IGNORECASE)
_NOT_DOTS = re.compile(r"[^.]+")


def validate_pool_name(name: object) -> str | ValidationFailure:
    """Validate a pool (template) name or alias from a ``POST /vm`` body.

    Args:
        name: The candidate name; anything that is not a string is an invalid format.

    Returns:
        The name, or ``Pool name is required`` / ``Pool name too long`` (> 100) /
        ``Invalid pool name format`` (not ``[A-Za-z0-9_-]+``).
    """
    if name is None or name == "":
        return ValidationFailure("Pool name is required")
    if not isinstance(name, str):
        return ValidationFailure("Invalid pool name format")
    if len(name) > MAX_POOL_NAME_LENGTH:
        return ValidationFailure("Pool name too long")
    if not _POOL_NAME.fullmatch(name):
        return ValidationFailure("Invalid pool name format")
    return name


def validate_count(
    value: object, name: str = "VM count", lo: int = 1, hi: int = 100
) -> int | ValidationFailure:
    """Validate an integer given as a JSON integer or a string of ASCII digits (vmpooler's ``^\\d+$``).

    Args:
        value: The candidate; ``None`` is missing, negative numbers, floats, booleans and
            other types are not valid integers (their Ruby ``to_s`` fails ``^\\d+$``).
        name: The subject of the messages.
        lo: The smallest accepted value.
        hi: The largest accepted value.

    Returns:
        The integer, or ``<name> is required`` / ``<name> must be a valid integer`` /
        ``<name> must be at least <lo>`` / ``<name> must be at most <hi>``.
    """
    if value is None:
        return ValidationFailure(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return ValidationFailure(f"{name} must be a valid integer")
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            return ValidationFailure(f"{name} must be a valid integer")
        significant = value.lstrip("0") or "0"
        # int() refuses more than 4300 digits; anything longer than ``hi`` is too big anyway.
        number = hi + 1 if len(significant) > len(str(hi)) else int(significant)
    elif value < 0:
        return ValidationFailure(f"{name} must be a valid integer")
    else:
        number = value
    if number < lo:
        return ValidationFailure(f"{name} must be at least {lo}")
    if number > hi:
        return ValidationFailure(f"{name} must be at most {hi}")
    return number


def validate_disk_size(value: object) -> int | ValidationFailure:
    """Validate the ``<size>`` of ``POST /vm/<hostname>/disk/<size>`` (gigabytes, 1..2048).

    Args:
        value: The path segment (or a JSON integer).

    Returns:
        The size, or a ``Disk size ...`` failure as :func:`validate_count` words it.
    """
    return validate_count(value, "Disk size", 1, 2048)


def validate_hostname(hostname: object) -> str | ValidationFailure:
    """Validate a VM hostname, short or fully qualified (case-insensitive).

    Dot-separated labels of ``[a-z0-9]`` with inner ``-``, each at most 63 characters, at most
    253 characters in all.

    Args:
        hostname: The path segment.

    Returns:
        The hostname unchanged (see :func:`shorten_hostname`), or ``Hostname is required`` /
        ``Hostname too long`` / ``Invalid hostname format``.
    """
    if hostname is None or hostname == "":
        return ValidationFailure("Hostname is required")
    if not isinstance(hostname, str):
        return ValidationFailure("Invalid hostname format")
    if len(hostname) > MAX_HOSTNAME_LENGTH:
        return ValidationFailure("Hostname too long")
    if not all(_LABEL.fullmatch(label) for label in hostname.split(".")):
        return ValidationFailure("Invalid hostname format")
    return hostname


def shorten_hostname(hostname: str) -> str:
    """The VM name inside a hostname: the part before the first dot.

    Like vmpooler this is the first run of non-dot characters, so ``".foo"`` gives ``"foo"``
    (only reachable on the routes vmpooler leaves unvalidated, e.g. snapshots).

    Args:
        hostname: A short name or an FQDN.

    Returns:
        The short name; ``""`` when the input has no non-dot character.
    """
    match = _NOT_DOTS.search(hostname)
    return match.group() if match else ""
