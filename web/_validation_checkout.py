"""What a checkout asks for: ``POST /vm`` with a JSON body, or ``POST /vm/<a>+<b>+<a>``."""

from __future__ import annotations

from collections.abc import Mapping

from web._validation_failure import ValidationFailure
from web._validation_fields import validate_count, validate_pool_name

__all__ = ["MAX_CHECKOUT_VMS", "checkout_request_from_body", "checkout_request_from_path"]

MAX_CHECKOUT_VMS = 100


def checkout_request_from_body(body: Mapping[str, object]) -> list[tuple[str, int]] | ValidationFailure:
    """Validate a ``POST /vm`` body ``{"<pool-or-alias>": "<count>", ...}``.

    Entries are checked in body order, name then count, and the first failure is returned, as
    vmpooler does. Whether the names are configured pools or aliases is the route's business.

    Args:
        body: The object from :func:`~web.validation.parse_json_body`.

    Returns:
        ``(name, count)`` pairs in body order (empty for ``{}``: the route answers 404), or the
        first ``Pool name ...`` / ``VM count ...`` failure.
    """
    wanted: list[tuple[str, int]] = []
    for name, count in body.items():
        checked_name = validate_pool_name(name)
        if isinstance(checked_name, ValidationFailure):
            return checked_name
        checked_count = validate_count(count)
        if isinstance(checked_count, ValidationFailure):
            return checked_count
        wanted.append((checked_name, checked_count))
    return wanted


def checkout_request_from_path(
    segment: str, *, max_total: int = MAX_CHECKOUT_VMS
) -> list[tuple[str, int]] | ValidationFailure:
    """Read the ``<a>+<b>+<a>`` path form: each occurrence is one VM.

    vmpooler checks nothing here but that the names exist, so names with dots are fine. Absurd
    input is refused: more than ``max_total`` VMs in all, and empty names (vmpooler would ask for
    a pool named ``""``, or silently drop trailing ones).

    Args:
        segment: The decoded path segment.
        max_total: The most VMs one request may name (the ondemand route may want another cap).

    Returns:
        ``(name, count)`` pairs, counts aggregated per name in first-seen order, or
        ``Pool name is required`` (empty segment) / ``VM count must be at most <max_total>`` /
        ``Invalid pool name format`` (an empty name between ``+``).
    """
    if segment == "":
        return ValidationFailure("Pool name is required")
    if segment.count("+") >= max_total:
        return ValidationFailure(f"VM count must be at most {max_total}")
    counts: dict[str, int] = {}
    for name in segment.split("+"):
        if name == "":
            return ValidationFailure("Invalid pool name format")
        counts[name] = counts.get(name, 0) + 1
    return list(counts.items())
