"""Turn msgspec validation errors into one-line :class:`ConfigError` messages that name the YAML key.

msgspec reports ``Expected `int`, got `str` - at `$.size```; users should read
``:pools: debian-12: size: expected a whole number >= 0, got 'five'``. The expected type is described
from msgspec's own type information (so constraints such as ``>= 0`` are named even when the value
had the wrong type), and the offending value is looked up in the input we converted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from commands.settings import ConfigError

__all__ = ["convert", "key", "show"]

T = TypeVar("T")

_MESSAGE = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_GOT = re.compile(r"got `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_ANY_KEY = object()


def convert(value: Any, kind: type[T], where: str) -> T:
    """Convert ``value`` (from YAML) to ``kind``; on failure raise ``ConfigError`` located at ``where``.

    Args:
        value: the plain data to convert.
        kind: the settings struct (or other type) to build.
        where: the key path of ``value`` in the YAML, e.g. ``":pools: debian-12:"``.
    """
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(str(exc), value, kind, where)) from None


def show(value: Any, limit: int = 60) -> str:
    """Render a configured value for an error message, shortened to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key(name: object) -> str:
    """Render a mapping key for an error message: as is when plain, quoted when it has odd characters."""
    text = str(name)
    return text if text and text.isprintable() and not any(ch.isspace() for ch in text) else repr(text)


def explain(message: str, value: Any, kind: Any, where: str) -> str:
    """Rephrase msgspec's ``message`` about converting ``value`` to ``kind``."""
    match = _MESSAGE.match(message)
    text = match["text"] if match else message
    tokens = _tokens(match["path"] if match and match["path"] else "")
    got = _GOT.search(text)
    names, current, info = _walk(tokens, value, mi.type_info(kind), got[1] if got else None)
    location = " ".join([where, *(name + ":" for name in names)]).strip()
    missing = _MISSING.search(text)
    if missing:
        return f"{location} missing required key '{missing[1]}'"
    if text.startswith(("Expected", "Invalid")) and info is not None:
        shown = show(current) if current is not _ANY_KEY else (f"a {got[1]}" if got else "an invalid value")
        return f"{location} expected {describe(info)}, got {shown}"
    return f"{location} {text[:1].lower()}{text[1:]}"


def _tokens(path: str) -> list[str | int | None]:
    tokens: list[str | int | None] = []
    for name, index in _TOKEN.findall(path):
        if name:
            tokens.append(name)
        elif index == "...":
            tokens.append(None)
        else:
            tokens.append(int(index))
    return tokens


def _walk(
    tokens: list[str | int | None], value: Any, info: mi.Type | None, got: str | None
) -> tuple[list[str], Any, mi.Type | None]:
    """Follow ``tokens`` through ``value`` and its type; return key names, offending value and type."""
    names: list[str] = []
    for token in tokens:
        info = _container(info)
        if token is None:
            found = _offending_key(value, info, got)
            names.append(key(found) if found is not _ANY_KEY else "(a value)")
            value = value[found] if found is not _ANY_KEY else _ANY_KEY
            info = info.value_type if isinstance(info, mi.DictType) else None
        elif isinstance(token, int):
            if names:
                names[-1] += f"[{token}]"
            else:
                names.append(f"[{token}]")
            value = value[token] if isinstance(value, list | tuple) and token < len(value) else _ANY_KEY
            info = _item_type(info)
        else:
            names.append(key(token))
            value = value.get(token, _ANY_KEY) if isinstance(value, Mapping) else _ANY_KEY
            info = _field_type(info, token)
    return names, value, info


def _container(info: mi.Type | None) -> mi.Type | None:
    """Pick the non-null member of an optional container type."""
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return members[0] if len(members) == 1 else info
    return info


def _field_type(info: mi.Type | None, name: str) -> mi.Type | None:
    if isinstance(info, mi.StructType):
        return next((f.type for f in info.fields if f.encode_name == name), None)
    if isinstance(info, mi.DictType):
        return info.value_type
    return None


def _item_type(info: mi.Type | None) -> mi.Type | None:
    if isinstance(info, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return info.item_type
    if isinstance(info, mi.TupleType):
        return info.item_types[0] if info.item_types else None
    return None


def _offending_key(value: Any, info: mi.Type | None, got: str | None) -> Any:
    """Find the entry of a mapping msgspec complained about (it reports only ``[...]``)."""
    if not isinstance(value, Mapping) or not isinstance(info, mi.DictType):
        return _ANY_KEY
    for key, item in value.items():
        if got is not None and _kind_name(item) == got:
            return key
        if got is None and _violates(info.value_type, item):
            return key
    return _ANY_KEY


def _kind_name(value: Any) -> str:
    """msgspec's name for the type of a plain value."""
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return "object" if isinstance(value, Mapping) else "array"


def _violates(info: mi.Type, value: Any) -> bool:
    """Whether ``value`` breaks the numeric bounds of ``info`` (constraint errors carry no "got")."""
    if not isinstance(info, mi.IntType | mi.FloatType):
        return False
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    return (
        (info.ge is not None and value < info.ge)
        or (info.gt is not None and value <= info.gt)
        or (info.le is not None and value > info.le)
        or (info.lt is not None and value >= info.lt)
    )


def describe(info: mi.Type) -> str:
    """Describe a type for humans: ``a whole number >= 0``, ``a list of strings``, ``true or false``."""
    if isinstance(info, mi.UnionType):
        parts = [describe(t) for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(parts) or "nothing"
    if isinstance(info, mi.IntType | mi.FloatType):
        noun = "a whole number" if isinstance(info, mi.IntType) else "a number"
        return noun + _bounds(info)
    if isinstance(info, mi.StrType):
        return "a non-empty string" if info.min_length else "a string"
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in info.values)
    if isinstance(info, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType | mi.TupleType):
        item = _item_type(info)
        return "a list of strings" if isinstance(item, mi.StrType) else "a list"
    if isinstance(info, mi.DictType | mi.StructType):
        return "a mapping"
    return "a valid value"


def _bounds(info: mi.IntType | mi.FloatType) -> str:
    if info.ge is not None and info.le is not None:
        return f" between {info.ge} and {info.le}"
    for bound, symbol in ((info.ge, ">="), (info.gt, ">"), (info.le, "<="), (info.lt, "<")):
        if bound is not None:
            return f" {symbol} {bound}"
    return ""
