"""Unknown keys in the configuration: a likely typo is an error, a key meant for someone else a warning.

The known keys are those the settings structs read (their fields, as declared by each struct's
:class:`~commands.settings.YamlShape`) plus the option keys the provider classes declare they read
(:class:`~commands.provider.OptionKeys`). An unknown key that is close to a known one (same letters
ignoring case and ``-``/``_``, or a :func:`difflib.get_close_matches` ratio of at least
:data:`TYPO_CUTOFF`) is almost surely a typo, and is refused even where unknown keys may pass as
provider options (``sise: 2`` must not become an option and leave the pool at size 0). Any other
unknown key is refused in a section that is wholly ours (``:redis:``, ``:auth:`` ...) and warned about
where it may be meant for someone else: top-level sections, ``:config:``, pool entries and provider
blocks (when the provider class declares what it reads) and DNS blocks.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec.inspect as mi

from commands.provider import OptionKeys
from commands.settings import DnsSettings, PoolSettings, ProviderSettings, Settings, shape_of, yaml_keys
from vmpooler._config_errors import key

__all__ = ["TYPO_CUTOFF", "Finding", "check_keys"]

TYPO_CUTOFF = 0.75
"""Similarity from which an unknown key counts as a typo of a known one (``sise``/``size`` is 0.75)."""
_HINT_CUTOFF = 0.6  # difflib's default: close enough to name in a warning


@dataclass(frozen=True)
class Finding:
    """One unknown key: where it is, what is wrong, and whether it stops startup.

    Attributes:
        where: the key's path, as in every configuration message (``:pools: debian-12: sise:``).
        message: what is wrong with it.
        error: ``True`` when it stops startup; ``False`` for a warning.
    """

    where: str
    message: str
    error: bool

    def __str__(self) -> str:
        return f"{self.where} {self.message}"


def check_keys(doc: Mapping[str, Any], classes: Mapping[str, OptionKeys | None]) -> list[Finding]:
    """Every unknown key of the key-normalised document ``doc``, in document order.

    Args:
        doc: the configuration with its keys normalised (no leading ``:``).
        classes: provider class (case-folded) → the option keys it declares; ``None`` when it
            declares none (then its unknown keys pass silently unless they look like typos).
    """
    checker = _Checker(doc, classes)
    checker.walk(doc, _info(Settings), "")
    legacy = doc.get("vsphere")
    if isinstance(legacy, Mapping) and "vsphere" not in _mapping(doc.get("providers")):
        checker.struct(
            legacy, _info(ProviderSettings), ":vsphere:", checker.provider_scope("vsphere", legacy)
        )
    elif isinstance(legacy, Mapping):
        checker.findings.append(Finding(":vsphere:", "ignored: :providers: has a vsphere block", False))
    return checker.findings


@dataclass(frozen=True)
class _Scope:
    """Who reads the unknown keys of one open mapping: the ``keys`` they declare, and what to say of
    a key none of them reads."""

    keys: Collection[str]
    unused: str


def _info(kind: type) -> mi.StructType:
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    return info


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _below(where: str, name: str) -> str:
    return f":{name}:" if not where else f"{where} {key(name)}:"


def _strip_optional(info: mi.Type) -> mi.Type:
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return members[0] if len(members) == 1 else info
    return info


def closest(name: str, known: Iterable[str], cutoff: float = TYPO_CUTOFF) -> str | None:
    """The known key ``name`` most likely stands for, if any is at least ``cutoff`` similar."""
    folded = {k.casefold().replace("-", "_"): k for k in known}
    wanted = name.casefold().replace("-", "_").strip(":")
    if wanted in folded:
        return folded[wanted]
    near = difflib.get_close_matches(wanted, list(folded), n=1, cutoff=cutoff)
    return folded[near[0]] if near else None


class _Checker:
    def __init__(self, doc: Mapping[str, Any], classes: Mapping[str, OptionKeys | None]) -> None:
        self.doc = doc
        self.classes = classes
        self.findings: list[Finding] = []

    def walk(self, value: Any, info: mi.Type, where: str, name: str = "") -> None:
        info = _strip_optional(info)
        if isinstance(info, mi.StructType) and isinstance(value, Mapping):
            self.struct(value, info, where, self._options(info.cls, value, name))
        elif isinstance(info, mi.DictType) and isinstance(value, Mapping):
            for entry, item in value.items():
                self.walk(item, info.value_type, _below(where, entry), str(entry))
        elif isinstance(info, mi.VarTupleType | mi.ListType) and isinstance(value, list):
            for index, item in enumerate(value):
                entry = item.get("name") if isinstance(item, Mapping) else None
                label = key(entry) if isinstance(entry, str) and entry else f"[{index}]"
                self.walk(item, info.item_type, f"{where} {label}:")

    def struct(self, value: Mapping[str, Any], info: mi.StructType, where: str, scope: _Scope | None) -> None:
        """Check one mapping decoded into ``info``; ``scope`` says who else reads keys from it."""
        shape = shape_of(info.cls)
        fields = {f.encode_name: f.type for f in info.fields}
        known = yaml_keys(info.cls) | frozenset(scope.keys if scope else ())
        for name, item in value.items():
            here = _below(where, name)
            if name in known:
                if name in fields and name not in shape.derived and name != shape.rest:
                    self.walk(item, fields[name], here)
            elif name in shape.removed:
                if item is not None:
                    self._add(here, shape.removed[name], error=True)
            elif name in shape.ignored:
                self._add(here, f"ignored: {shape.ignored[name]}", error=False)
            else:
                self._unknown(here, name, known, shape.accepts_unknown, scope)

    def _unknown(
        self, here: str, name: str, known: Collection[str], open_: bool, scope: _Scope | None
    ) -> None:
        typo = closest(name, known)
        if typo is not None:
            self._add(here, f"unknown key; did you mean {typo!r}?", error=True)
        elif not open_:
            self._add(here, f"unknown key (known here: {', '.join(sorted(known))})", error=True)
        elif scope is not None:
            hint = closest(name, known, _HINT_CUTOFF)
            nearest = f" (closest known key: {hint!r})" if hint else ""
            self._add(here, f"{scope.unused}; ignored{nearest}", error=False)

    def _add(self, where: str, message: str, *, error: bool) -> None:
        self.findings.append(Finding(where, message, error))

    def _options(self, kind: type, value: Mapping[str, Any], name: str) -> _Scope | None:
        """Who reads the keys of this entry that are no field (see :class:`_Scope`); ``None`` where
        nobody declares what they read (a DNS plugin, an undeclared provider class), so an unknown key
        passes unless it looks like a typo."""
        if kind is PoolSettings:
            provider = value.get("provider") or "dummy"
            if not isinstance(provider, str):
                return None  # refused when the pool is decoded
            block = _mapping(_mapping(self.doc.get("providers")).get(provider))
            if not block and provider == "vsphere":
                block = _mapping(self.doc.get("vsphere"))
            cls = block.get("provider_class", provider)
            declared = self._declared(cls)
            if declared is None:
                return None
            return _Scope(declared.pool, f"not a pool key, nor read by the {cls!r} provider")
        if kind is ProviderSettings:
            return self.provider_scope(name, value)
        if kind is Settings:
            return _Scope((), "unknown section")
        return None if kind is DnsSettings else _Scope((), "unknown key")

    def provider_scope(self, name: str, block: Mapping[str, Any]) -> _Scope | None:
        """Who reads the keys of the provider block ``block`` called ``name``."""
        cls = block.get("provider_class", name)
        declared = self._declared(cls)
        if declared is None:
            return None
        return _Scope(declared.provider, f"not read by the {cls!r} provider")

    def _declared(self, provider_class: Any) -> OptionKeys | None:
        return self.classes.get(provider_class.casefold()) if isinstance(provider_class, str) else None
