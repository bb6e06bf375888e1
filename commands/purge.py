"""vmpooler's startup purge of provider resources that belong to no configured pool."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from .provider import PoolTarget, Provider
from .settings import Settings

__all__ = ["purge_unconfigured"]

log = logging.getLogger(__name__)


async def purge_unconfigured(
    settings: Settings, providers: Mapping[str, Provider], targets: Iterable[tuple[Provider, PoolTarget]]
) -> dict[str, list[str]]:
    """Ask every provider whose ``purge_unconfigured_resources`` is set (in its block, or globally in
    ``:config:``; ``purge_unconfigured_folders`` is the old name) to delete what belongs to none of its
    configured pools, sparing ``resources_allowlist`` (the provider's, else the global one;
    ``folder_whitelist`` is the old name).

    A provider's failure is logged and never stops the caller (the manager's startup).

    Returns:
        Provider name → what it deleted, for the providers that purged.
    """
    config = settings.config
    targets = list(targets)
    purged: dict[str, list[str]] = {}
    for name, provider in providers.items():
        options = settings.providers[name].options
        flag = options.get("purge_unconfigured_resources", options.get("purge_unconfigured_folders"))
        if not (flag if flag is not None else config.purge_unconfigured_resources):
            continue
        allowlist = options.get("resources_allowlist", options.get("folder_whitelist"))
        if allowlist is None:
            allowlist = config.resources_allowlist
        names = [allowlist] if isinstance(allowlist, str) else [str(item) for item in allowlist]
        pools = [target for owner, target in targets if owner is provider]
        try:
            deleted = await provider.purge_unconfigured(pools, names)
        except Exception:  # a startup clean-up must never stop the manager
            log.exception("provider %s: purging unconfigured resources failed", name)
            continue
        log.info("provider %s: purged %d unconfigured resource(s): %s", name, len(deleted), deleted)
        purged[name] = deleted
    return purged
