"""The layering rules of CONVENTIONS.md, checked on every import of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("events", "projectors", "commands", "providers", "web", "vmpooler")

# package -> (packages or modules it must not import)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "events": ("projectors", "commands", "providers", "web", "vmpooler"),
    "commands": ("web", "vmpooler", "providers"),
    "projectors": ("web", "vmpooler", "providers"),
    "web": ("providers", "vmpooler"),
    "providers": ("projectors", "web", "vmpooler"),
}
# providers may use exactly the provider protocol from commands/
PROVIDER_ALLOWED_COMMANDS = {"commands.provider"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_point_inward(package: str) -> None:
    broken = []
    for path in modules(package):
        for name in imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package]:
                broken.append(f"{path.relative_to(ROOT)} imports {name}")
            if package == "providers" and top == "commands" and name not in PROVIDER_ALLOWED_COMMANDS:
                broken.append(
                    f"{path.relative_to(ROOT)} imports {name} (providers may use only the protocol)"
                )
    assert not broken, "\n".join(broken)


def test_the_checker_sees_imports() -> None:
    assert "commands.provider" in imports(ROOT / "providers" / "dummy.py")
    assert "providers.dummy" in imports(ROOT / "vmpooler" / "wiring.py")
