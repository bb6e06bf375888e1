from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from events import Keys, Recorded

from ._tx import Tx

__all__ = ["Projection"]


class Projection(Protocol):
    """A read model folded from pool streams.

    ``apply`` must be a pure fold of the batch over the current read model (read through ``tx``),
    so that any split of the log into batches, and a rebuild from the start, give the same bytes.
    """

    name: str

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        """Every key of this read model for ``pool`` starts with this (used to drop it)."""
        ...

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None: ...
