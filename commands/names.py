"""VM names: ``<prefix><adjective>-<adjective>-<noun>``, decided before any provider call.

140 x 139 x 134 = 2.6 million names, so the registry of names ever used stays sparse.
"""

from __future__ import annotations

import random

__all__ = ["NameGenerator"]

_ADJECTIVES = (
    "able agile airy amber ample azure balmy bold brave breezy brisk bright calm candid cheery chill civic "
    "clever coral cosmic cozy crisp curly dainty dapper daring deft dusky eager early easy elder epic equal "
    "fair fancy fast fervent fiery fluffy flying fond frank free fresh frosty funky fuzzy gentle giant glad "
    "gleaming glossy golden grand green gusty handy happy hardy hasty hazy hearty humble icy ideal jazzy jolly "
    "jovial keen kind lanky lively lucky lunar mellow merry mighty misty modest mossy muddy noble nimble "
    "olive open peppy perky plucky polar polite proud quick quiet rapid ready regal rosy rowdy royal rustic "
    "sandy shiny silent silky silver sleek smart snowy solar solid sonic spicy spry steady stormy sturdy "
    "sunny super swift tame tidy tiny topaz tranquil trusty upbeat urban vast velvet vivid warm wavy wild "
    "windy wise witty young zany zesty"
).split()
_NOUNS = (
    "acorn anchor apple arrow aspen badger bagel banjo basil beacon beaver birch bison bobcat breeze brook "
    "cactus canary canyon carrot cedar cherry cobra comet condor coral cougar coyote crane cricket dahlia "
    "delta dingo dolphin donut dove dragon eagle ember falcon fennel ferret fjord flint fox gecko geyser "
    "ginger glacier gopher granite hawk hazel heron hippo iris island jackal jaguar jasper juniper kayak "
    "kettle kiwi koala lagoon lemon lemur lilac lizard llama lotus lynx magnet mango maple marble meadow "
    "melon mesa mink moose nectar newt nutmeg oak ocelot olive onyx orca otter owl panda papaya parrot "
    "pebble pepper pine plum pony poppy prairie puffin quail quartz rabbit raven reef river robin rocket "
    "saddle salmon sequoia shark sparrow spruce squid summit tango thistle tiger topaz tulip tundra turtle "
    "valley viper walnut walrus willow wombat yak zebra"
).split()


class NameGenerator:
    """Random VM names; the decision scripts reject any already in use.

    Args:
        prefix: vmpooler's ``prefix`` (prepended as is; include a separator if you want one).
        seed: seed for reproducible names in tests; ``None`` for system randomness.
    """

    def __init__(self, prefix: str = "", seed: int | None = None) -> None:
        self.prefix = prefix
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()

    def one(self) -> str:
        first, second = self._rng.sample(_ADJECTIVES, 2)
        return f"{self.prefix}{first}-{second}-{self._rng.choice(_NOUNS)}"

    def many(self, n: int) -> list[str]:
        """``n`` distinct candidate names."""
        out: dict[str, None] = {}
        while len(out) < n:
            out[self.one()] = None
        return list(out)
