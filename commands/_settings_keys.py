"""How a settings struct maps onto its YAML mapping, declared once on the struct (``YAML``).

The loader (which fields it fills from YAML), the unknown-key check (which keys are known, which
unknown keys are typos) and ``vmpooler config check`` (which prints the settings back as YAML) all
read the same declaration, so the known keys are the struct's fields and never a second list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import msgspec

__all__ = ["YamlShape", "shape_of", "yaml_keys"]


def _frozen(**items: str) -> Mapping[str, str]:
    return MappingProxyType(items)


@dataclass(frozen=True)
class YamlShape:
    """The YAML side of one settings struct; a struct without a ``YAML`` class attribute is closed.

    Attributes:
        derived: fields the loader fills itself (from the entry's mapping key, or the value as written),
            which are no YAML keys.
        rest: the field that takes every key that is no field (``options``, ``extra``); ``""`` for none.
        open: whether a key that is no field may be meant for someone else (a provider, a plugin, a
            newer vmpooler), so it is warned about rather than refused; implied by ``rest``.
        renamed: deprecated spelling → the field it stands for.
        also: further keys read that are no field (a legacy section, keys read from ``rest``).
        ignored: keys vmpooler accepts here and ignores, as we do → why (for the warning).
        removed: keys that stop startup when set → the message.
    """

    derived: frozenset[str] = frozenset()
    rest: str = ""
    open: bool = False
    renamed: Mapping[str, str] = field(default_factory=_frozen)
    also: frozenset[str] = frozenset()
    ignored: Mapping[str, str] = field(default_factory=_frozen)
    removed: Mapping[str, str] = field(default_factory=_frozen)

    @property
    def accepts_unknown(self) -> bool:
        """Whether an unknown key is a warning (open) rather than an error (closed)."""
        return self.open or bool(self.rest)


_CLOSED = YamlShape()


def shape_of(kind: type) -> YamlShape:
    """The declared :class:`YamlShape` of a settings struct (closed when it declares none)."""
    shape = getattr(kind, "YAML", _CLOSED)
    return shape if isinstance(shape, YamlShape) else _CLOSED


def yaml_keys(kind: type[msgspec.Struct]) -> frozenset[str]:
    """Every YAML key ``kind`` reads: its fields (less ``derived`` and ``rest``), ``renamed`` and ``also``."""
    shape = shape_of(kind)
    fields = {f.encode_name for f in msgspec.structs.fields(kind)}
    return frozenset(fields - shape.derived - {shape.rest}) | shape.renamed.keys() | shape.also
