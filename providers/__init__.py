"""Concrete VM backends implementing :class:`commands.provider.Provider`.

Only the composition root imports this package; ``commands/`` and ``web/`` never do. Each provider is
selected by vmpooler's provider type name (its ``TYPE`` class attribute): ``dummy`` is
:class:`~providers.dummy.DummyProvider`, a simulated cloud whose inventory lives in Redis.
"""

from __future__ import annotations

from providers.dummy import DummyProvider

__all__ = ["DummyProvider"]
