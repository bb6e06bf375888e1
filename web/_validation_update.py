"""``PUT /vm/<hostname>``: lifetime and tag validation, the tag filter, and the whole-body check."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from web._validation_failure import ValidationFailure, VmUpdateRejected

__all__ = [
    "MAX_LIFETIME_HOURS",
    "MAX_TAG_KEY_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "VmUpdate",
    "apply_tagfilter",
    "parse_vm_update",
    "validate_lifetime_update",
    "validate_tags",
]

MAX_TAG_KEY_LENGTH = 50
MAX_TAG_VALUE_LENGTH = 255
# vmpooler stores any positive lifetime when no upper limit is configured, even a bignum; ours
# must fit the events' integers, and 2**31 - 1 hours is ~245,000 years.
MAX_LIFETIME_HOURS = 2**31 - 1

_TAG_KEY = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
# vmpooler's set plus the comma: Beaker tags every host with its roles as "master, agent".
_TAG_VALUE_BAD_CHAR = re.compile(r"[^\w\s\-.@:/,]", re.ASCII)
# Ruby's String#to_i: leading whitespace, a sign, digits with single underscores, junk ignored.
_RUBY_INT_PREFIX = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+(?:_[0-9]+)*)", re.ASCII)
_HUGE = 10**18


class VmUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A validated ``PUT /vm/<hostname>`` body, ready to apply.

    Attributes:
        lifetime: Total hours since checkout to store, or ``None`` when not given.
        tags: Tags after the tag filter, empty values dropped: exactly what to store.
    """

    lifetime: int | None = None
    tags: dict[str, str] = {}


def _ruby_to_s(value: object) -> str:
    # How vmpooler interpolates a JSON value into a message; containers are shown as JSON.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than int -> str allows
            return "<huge integer>"
    return msgspec.json.encode(value).decode()


def _ruby_to_i(value: object) -> int | None:
    # Ruby's to_i as vmpooler applies it to a lifetime; None where vmpooler would crash (500).
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(-_HUGE, min(_HUGE, value))
    if isinstance(value, float):
        return max(-_HUGE, min(_HUGE, math.trunc(value))) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    match = _RUBY_INT_PREFIX.match(value)
    if match is None:
        return 0
    digits = match.group(1).replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    significant = digits.lstrip("+-").lstrip("0") or "0"
    return sign * (_HUGE if len(significant) > 18 else int(significant))


def validate_lifetime_update(value: object, max_upper_limit: int | None) -> int | ValidationFailure:
    """Validate a ``lifetime`` (total hours since checkout) as ``PUT /vm/<hostname>`` does.

    Strings are read like Ruby's ``to_i`` (``"12abc"`` is 12, ``"abc"`` is 0). vmpooler 500s on
    booleans, arrays and objects; they fail here as a non-positive lifetime.

    Args:
        value: The JSON value of ``lifetime``.
        max_upper_limit: ``config.max_lifetime_upper_limit``; ``None`` when not configured. The
            limit itself is rejected (vmpooler compares with ``>=``).

    Returns:
        The lifetime in hours, or ``Lifetime must be a positive integer (got <value>)`` /
        ``You provided a lifetime (<value>) that exceeds the configured maximum of <limit>.`` /
        ``Lifetime must be at most 2147483647`` (our own cap when no limit is configured).
    """
    hours = _ruby_to_i(value)
    if hours is None or hours <= 0:
        return ValidationFailure(f"Lifetime must be a positive integer (got {_ruby_to_s(value)})")
    if max_upper_limit is not None and hours >= max_upper_limit:
        return ValidationFailure(
            f"You provided a lifetime ({_ruby_to_s(value)}) that exceeds the configured maximum"
            f" of {max_upper_limit}."
        )
    if hours > MAX_LIFETIME_HOURS:
        return ValidationFailure(f"Lifetime must be at most {MAX_LIFETIME_HOURS}")
    return hours


def _tag_failure(key: str, value: object) -> str | None:
    if key == "":
        return "Tag key is required"
    if len(key) > MAX_TAG_KEY_LENGTH:
        return "Tag key too long"
    if not _TAG_KEY.fullmatch(key):
        return "Invalid tag key format"
    if value is None:
        return None
    if not isinstance(value, str):
        # vmpooler 500s on a non-string value (false included); a client error here.
        return f"Tag value for {key} must be a string"
    if len(value) > MAX_TAG_VALUE_LENGTH:
        return "Tag value too long"
    if _TAG_VALUE_BAD_CHAR.search(value):
        return "Tag value contains invalid characters"
    return None


def validate_tags(tags: object, allowed_tags: Collection[str] | None) -> list[str]:
    """The failure strings vmpooler's ``PUT /vm/<hostname>`` collects for its ``tags`` argument.

    Args:
        tags: The JSON value of ``tags``.
        allowed_tags: ``config.allowed_tags``; ``None`` when not configured (an empty
            collection allows no tag at all, as in vmpooler).

    Returns:
        At most one failure per tag (key checks first, then the value; ``null`` values pass and
        are dropped later), then ``You provided unsuppored tags (<k1>, <k2>).`` (sic) naming the
        keys outside ``allowed_tags``. A non-object gives only ``You provided tags (<value>) as
        something other than a hash.`` (vmpooler then 500s). Empty when all is well.
    """
    if not isinstance(tags, dict):
        return [f"You provided tags ({_ruby_to_s(tags)}) as something other than a hash."]
    failures = [f for key, value in tags.items() if (f := _tag_failure(str(key), value)) is not None]
    if allowed_tags is not None:
        unsupported = [str(key) for key in tags if key not in allowed_tags]
        if unsupported:
            # vmpooler prints the whole tags hash in Ruby syntax; the offending keys say more.
            failures.append(f"You provided unsuppored tags ({', '.join(unsupported)}).")
    return failures


def apply_tagfilter(
    tags: Mapping[str, str | None], filters: Mapping[str, str | re.Pattern[str]]
) -> dict[str, str]:
    """Apply ``config.tagfilter`` and drop empty values: the tags vmpooler would store.

    When a tag has a filter and the filter matches anywhere in the value, the value becomes
    the concatenation of the capture groups (``url: '(.*)\\/'`` turns ``foo.com/x.html`` into
    ``foo.com``; a filter without groups turns a match into ``""``, which is then dropped).
    String filters compile with ``re.MULTILINE`` because Ruby's ``^``/``$`` are line anchors.

    Args:
        tags: Validated tags (see :func:`validate_tags`).
        filters: Tag name to regular expression.

    Returns:
        The tags to store, in input order, without ``None`` or empty values.

    Raises:
        re.error: If a string filter is not a valid regular expression (a configuration error).
    """
    kept: dict[str, str] = {}
    for key, value in tags.items():
        if not value:
            continue
        pattern = filters.get(key)
        if pattern is not None:
            compiled = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
            match = compiled.search(value)
            if match is not None:
                value = "".join(group or "" for group in match.groups())
        if value:
            kept[key] = value
    return kept


def parse_vm_update(
    body: Mapping[str, Any],
    *,
    max_lifetime_upper_limit: int | None,
    allowed_tags: Collection[str] | None,
    tagfilter: Mapping[str, str | re.Pattern[str]],
) -> VmUpdate | VmUpdateRejected:
    """Validate a whole ``PUT /vm/<hostname>`` body, collecting every failure in body order.

    The route must answer 401 first when auth is configured, ``"lifetime" in body`` and the
    token is missing or invalid: vmpooler halts on that before reporting any failure.

    Args:
        body: The object from :func:`~web.validation.parse_json_body`.
        max_lifetime_upper_limit: ``config.max_lifetime_upper_limit`` or ``None``.
        allowed_tags: ``config.allowed_tags`` or ``None``.
        tagfilter: ``config.tagfilter`` (empty when not configured).

    Returns:
        What to store, or the failures (any key other than ``lifetime`` and ``tags`` gives
        ``Unknown argument <key>.``).
    """
    failures: list[str] = []
    lifetime: int | None = None
    tags: dict[str, str | None] = {}
    for key, value in body.items():
        if key == "lifetime":
            checked = validate_lifetime_update(value, max_lifetime_upper_limit)
            if isinstance(checked, ValidationFailure):
                failures.append(checked.message)
            else:
                lifetime = checked
        elif key == "tags":
            tag_failures = validate_tags(value, allowed_tags)
            failures.extend(tag_failures)
            if not tag_failures:
                tags = value
        else:
            # vmpooler interpolates the value here ("Unknown argument 5."), a bug: the key is
            # what the client got wrong.
            failures.append(f"Unknown argument {key}.")
    if failures:
        return VmUpdateRejected(tuple(failures))
    return VmUpdate(lifetime=lifetime, tags=apply_tagfilter(tags, tagfilter))
