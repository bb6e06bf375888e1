from __future__ import annotations

import msgspec

__all__ = ["Event"]


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of every event: immutable, keyword-only, tagged by an explicit stable string.

    Subclasses set ``tag="family.past-tense-name"``; the tag is what the log stores, so it never
    changes once released. New fields always get defaults (old entries must still decode).
    """
