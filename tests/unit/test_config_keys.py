"""Unknown configuration keys: typos are refused naming the closest key, keys meant for a provider or
a plugin pass with a warning, provider options the providers declare pass silently."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from commands.provider import PoolTarget
from commands.settings import ConfigError
from providers.dummy import KNOBS
from providers.ec2 import Ec2Provider
from providers.vsphere import VsphereProvider
from providers.vsphere.options import POOL_KEYS
from vmpooler.config import Finding, load_settings, parse_settings
from vmpooler.config_check import render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "vmpooler.yaml"


def findings_of(doc: dict[str, Any]) -> list[str]:
    """Every finding for ``doc`` as ``error: …`` or ``warning: …``, whether or not it loads."""
    found: list[Finding] = []
    with contextlib.suppress(ConfigError):
        parse_settings(doc, env={}, findings=found)
    return [f"{'error' if f.error else 'warning'}: {f}" for f in found]


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(doc, env={})
    return str(caught.value)


def pool(**keys: Any) -> dict[str, Any]:
    return {"name": "debian", "template": "t/debian", **keys}


# --- the review's cases: each a typo that used to be ignored ----------------------------------------


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"pools": [pool(sise=2)]}, ":pools: debian: sise: unknown key; did you mean 'size'?"),
        ({"config": {"task_limt": 3}}, ":config: task_limt: unknown key; did you mean 'task_limit'?"),
        (
            {"pools": [pool(providr="dummy")]},
            ":pools: debian: providr: unknown key; did you mean 'provider'?",
        ),
        ({":pool": [pool()]}, ":pool: unknown key; did you mean 'pools'?"),
        ({"pools": [pool(Size=2)]}, ":pools: debian: Size: unknown key; did you mean 'size'?"),
        (
            {"pools": [pool(**{"ready-ttl": 5})]},
            ":pools: debian: ready-ttl: unknown key; did you mean 'ready_ttl'?",
        ),
    ],
)
def test_a_key_close_to_a_known_key_is_refused_naming_it(doc: dict[str, Any], message: str) -> None:
    assert refused(doc) == message


def test_a_typo_never_becomes_a_provider_option() -> None:
    doc = {"pools": [pool(sise=2)], "providers": {"dummy": {"createvm_max_tim": 1}}}
    assert findings_of(doc) == [
        "error: :pools: debian: sise: unknown key; did you mean 'size'?",
        "error: :providers: dummy: createvm_max_tim: unknown key; did you mean 'createvm_max_time'?",
    ]


def test_every_unknown_key_is_reported_at_once() -> None:
    doc = {"config": {"task_limt": 3, "my_plugin_key": 1}, "bogus_section": {}, "pools": [pool(sise=1)]}
    assert findings_of(doc) == [
        "error: :config: task_limt: unknown key; did you mean 'task_limit'?",
        "warning: :config: my_plugin_key: unknown key; ignored",
        "warning: :bogus_section: unknown section; ignored",
        "error: :pools: debian: sise: unknown key; did you mean 'size'?",
    ]


# --- provider options ----------------------------------------------------------------------------


def test_pool_keys_the_providers_declare_are_options_without_a_warning() -> None:
    doc = {
        "providers": {
            "vc": {"provider_class": "vsphere", "server": "vc", "password": "p", "task_timeout": 60}
        },
        "pools": [
            pool(provider="vc", folder="ci/debian", datastore="ds", pool="rp", snapshot_mainMem_iowait=0),
            {"name": "sim", "template": "t/sim", "createvm_fail_percent": 5, "quota": 2},
        ],
    }
    found: list[Finding] = []
    loaded = parse_settings(doc, env={}, findings=found)
    assert found == []
    assert loaded.pools[0].options == {
        "folder": "ci/debian",
        "datastore": "ds",
        "pool": "rp",
        "snapshot_mainMem_iowait": 0,
    }
    assert loaded.pools[1].options == {"createvm_fail_percent": 5, "quota": 2}


def test_keys_no_provider_reads_are_warnings_naming_who_does_not_read_them() -> None:
    doc = {
        "providers": {"dummy": {"filename": "/tmp/dummy.yaml"}},
        "pools": [pool(folder="f", timeot_notification=1)],
    }
    assert findings_of(doc) == [
        "warning: :providers: dummy: filename: not read by the 'dummy' provider; ignored",
        "warning: :pools: debian: folder: not a pool key, nor read by the 'dummy' provider; ignored",
        "error: :pools: debian: timeot_notification: unknown key; did you mean 'timeout_notification'?",
    ]


def test_an_undeclared_provider_class_takes_any_key_but_a_typo() -> None:
    doc = {"providers": {"gce": {"project": "p"}}, "pools": [pool(provider="gce", zone="z", templat="x")]}
    found: list[Finding] = []
    with pytest.raises(ConfigError, match="did you mean 'template'"):
        parse_settings(doc, env={}, known_provider_classes=("gce",), findings=found)
    assert [str(f) for f in found] == [":pools: debian: templat: unknown key; did you mean 'template'?"]


# --- sections that are wholly ours -----------------------------------------------------------------


def test_an_unknown_key_in_a_section_of_ours_is_refused_listing_the_known_ones() -> None:
    assert refused({"tracing": {"enable": True}}) == ":tracing: enable: unknown key; did you mean 'enabled'?"
    assert refused({"statsd": {"server": "s", "flush": 1}}) == (
        ":statsd: flush: unknown key (known here: port, prefix, server)"
    )
    assert refused({"auth": {"provider": "ldap", "ldap": {"hots": "h"}}}) == (
        ":auth: ldap: hots: unknown key; did you mean 'host'?"
    )
    assert refused({"config": {"health_thresholds": {"dlq_max_warn": 1}}}).startswith(
        ":config: health_thresholds: dlq_max_warn: unknown key; did you mean 'dlq_max_warning'?"
    )


def test_free_form_mappings_are_not_checked() -> None:
    doc = {
        "tagfilter": {"anything": "(.*)"},
        "config": {"backend_weight": {"cluster-a": 1}},
        "auth": {"provider": "dummy", "ldap": {"encryption": {"tls_options": {"ssl_version": "TLSv1_2"}}}},
        "dns_configs": {"gcp": {"dns_class": "dynamic-dns", "project": "p"}},
    }
    assert findings_of(doc) == []


def test_keys_vmpooler_accepts_and_ignores_are_warnings() -> None:
    assert findings_of({"redis": {"dlq_ttl": 168}}) == [
        "warning: :redis: dlq_ttl: ignored: vmpooler's example file lists it here, but it is read under "
        ":config: only"
    ]
    assert findings_of({"config": {"purge_unconfigured_folders": True, "domain": None}}) == []
    assert refused({"config": {"domain": "example.com"}}).startswith(":config: domain: removed in vmpooler 3")


def test_a_pool_without_template_is_an_error() -> None:
    assert refused({"pools": [{"name": "a", "size": 1}]}) == (
        ":pools: a: missing required key 'template' (what the pool's VMs are cloned from)"
    )
    assert refused({"pools": [{"name": "a", "template": " "}]}) == (
        ":pools: a: template: expected a non-empty string, got ' '"
    )


def test_the_example_configuration_has_no_unknown_key() -> None:
    found: list[Finding] = []
    load_settings(EXAMPLE, env={}, findings=found)
    assert found == []


# --- the providers' declarations cover what they read -------------------------------------------------


class Recording(Mapping[str, Any]):
    """An empty mapping that remembers every key asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_the_vsphere_pool_keys_are_what_a_clone_reads() -> None:
    provider = VsphereProvider("vc", {"server": "vc.invalid"})
    options = Recording()
    provider._placement(PoolTarget(name="p", template="t", options=options))  # type: ignore[arg-type]
    assert options.asked == set(POOL_KEYS)


def _keys_read(path: Path) -> set[str]:
    """String keys the module reads from a mapping named like options (``options.get("k")``,
    ``_int(options, "k", ...)``)."""
    names = {"options", "opts", "merged", "pool_options"}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func, args = node.func, node.args
        if isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Name):
            if (
                func.value.id in names
                and isinstance(args[0], ast.Constant)
                and isinstance(args[0].value, str)
            ):
                found.add(args[0].value)
        elif isinstance(args[0], ast.Name) and args[0].id in names and len(args) > 1:
            found |= (
                {args[1].value}
                if isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)
                else set()
            )
    return found


_SHARED = ("guard.py", "resilience.py")
"""Modules under providers/ every SDK provider reads its options through."""


@pytest.mark.parametrize(
    ("package", "provider", "sample"),
    [
        ("vsphere", VsphereProvider, {"server", "password", "folder", "circuit_breaker_timeout"}),
        ("ec2", Ec2Provider, {"region", "subnet_id", "quota_pause", "circuit_breaker_timeout"}),
    ],
)
def test_a_provider_declaration_covers_every_key_its_code_reads(
    package: str, provider: Any, sample: set[str]
) -> None:
    files = [*(ROOT / "providers" / package).glob("*.py"), *(ROOT / "providers" / f for f in _SHARED)]
    read = set().union(*(_keys_read(path) for path in files))
    assert sample <= read  # the scan sees reads
    assert read <= provider.OPTION_KEYS.provider | provider.OPTION_KEYS.pool


def test_the_dummy_declares_its_knobs_for_both_places() -> None:
    from providers.dummy import DummyProvider

    assert DummyProvider.OPTION_KEYS.provider == DummyProvider.OPTION_KEYS.pool == frozenset(KNOBS)


# --- the effective configuration loads back as itself ----------------------------------------------------


def test_rendered_settings_load_back_to_the_same_settings() -> None:
    loaded = load_settings(EXAMPLE, env={"REDIS_SERVER": "redis.example", "TASK_LIMIT": "4"})
    text = yaml.safe_dump(render(loaded))
    found: list[Finding] = []
    again = parse_settings(yaml.safe_load(text), env={}, source=loaded.source, findings=found)
    assert found == []
    assert again == loaded
    assert again.config.task_limit == 4
