"""Settings and the configuration loader: defaults, sources, environment, merging, lookups, errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.settings import (
    DUMMY_PROVIDER,
    ConfigError,
    GlobalSettings,
    PoolSettings,
    RateLimit,
    RedisSettings,
    Settings,
)
from vmpooler.config import deep_merge, load_settings, normalize_keys, parse_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vmpooler.yaml"


def parse(doc: dict[str, Any], **env: str) -> Settings:
    return parse_settings(doc, env=env)


def error_of(doc: dict[str, Any], **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(doc, **env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def outcome(doc: dict[str, Any]) -> str:
    """The ConfigError message for ``doc``, or ``""`` when it loads; anything else propagates."""
    try:
        parse(doc)
    except ConfigError as exc:
        return str(exc)
    return ""


def pools(*entries: Any) -> dict[str, Any]:
    """``:pools:`` of ``entries``, each with a template unless it sets its own."""
    return {":pools": [{"template": "t/x", **e} if isinstance(e, dict) else e for e in entries]}


# --- defaults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("site_name", "vmpooler"),
        ("logfile", ""),
        ("prefix", ""),
        ("task_limit", 10),
        ("ondemand_clone_limit", 10),
        ("max_ondemand_instances_per_request", 10),
        ("ondemand_request_ttl", 5),
        ("max_vm_retries", 3),
        ("timeout", 15),
        ("timeout_notification", 5),
        ("vm_checktime", 1),
        ("vm_lifetime", 24),
        ("vm_lifetime_auth", None),
        ("max_lifetime_upper_limit", None),
        ("ready_ttl", 60),
        ("allowed_tags", None),
        ("experimental_features", False),
        ("rate_limiting_enabled", False),
        ("check_loop_delay_min", 5),
        ("check_loop_delay_max", 60),
        ("check_loop_delay_decay", 2.0),
        ("check_ready_vm_hostname_for_mismatch", True),
        ("create_linked_clones", True),
        ("max_tries", 3),
        ("retry_factor", 10),
        ("circuit_breaker_enabled", True),
        ("circuit_breaker_failure_threshold", 5),
        ("circuit_breaker_timeout", 30),
        ("circuit_breaker_half_open_attempts", 3),
        ("connection_pool_timeout_initial", 30),
        ("dlq_enabled", False),
        ("dlq_ttl", 168),
        ("dlq_max_entries", 10_000),
        ("purge_interval", 3600),
        ("max_ready_age", 86_400),
        ("health_check_interval", 300),
        ("max_deliveries", 5),
        ("reclaim_idle_seconds", 60),
    ],
)
def test_global_defaults_are_vmpoolers_code_defaults(key: str, value: object) -> None:
    assert getattr(parse({}).config, key) == value


def test_empty_document_gives_defaults_and_the_dummy_provider() -> None:
    loaded = parse({})
    assert loaded.pools == ()
    assert loaded.providers == {"dummy": DUMMY_PROVIDER}
    assert loaded.redis.embedded
    assert loaded.redis.connection_url() is None
    assert loaded.auth is None
    assert loaded.metrics_backend is None
    assert loaded.config.health_thresholds.stuck_vm_max_critical == 50
    assert loaded.rate_limits.vm_creation == RateLimit(limit=20, period=60)


def test_settings_constructed_in_code_work_without_the_loader() -> None:
    direct = Settings(pools=(PoolSettings(name="a", size=1),))
    assert direct.provider_for("a") is DUMMY_PROVIDER
    with pytest.raises(KeyError):
        direct.provider_for("nope")


def test_pools_inherit_global_defaults_unless_they_set_their_own() -> None:
    doc = {
        "config": {"timeout": 30, "ready_ttl": 90, "check_ready_vm_hostname_for_mismatch": False},
        **pools({"name": "a"}, {"name": "b", "timeout": 5, "ready_ttl": 10, "folder": "f", "zone": "z"}),
    }
    a, b = parse(doc).pools
    assert (a.timeout, a.ready_ttl, a.check_hostname_for_mismatch, a.provider) == (30, 90, False, "dummy")
    assert (b.timeout, b.ready_ttl, b.options) == (5, 10, {"folder": "f", "zone": "z"})


# --- keys ---------------------------------------------------------------------------------------


def test_symbol_and_plain_keys_decode_the_same() -> None:
    symbols = {
        ":config": {"task_limit": 4},
        ":pools": [{"name": "a", "template": "t/a", "size": 1}],
        ":providers": {":dummy": {"createvm_max_time": 2}},
        ":auth": {"provider": "ldap", ":ldap": {"host": "h", "service_account_hash": {":user_dn": "cn=x"}}},
    }
    plain = {
        "config": {"task_limit": 4},
        "pools": [{"name": "a", "template": "t/a", "size": 1}],
        "providers": {"dummy": {"createvm_max_time": 2}},
        "auth": {"provider": "ldap", "ldap": {"host": "h", "service_account_hash": {"user_dn": "cn=x"}}},
    }
    assert parse(symbols) == parse(plain)
    ldap = parse(symbols).auth.ldap  # type: ignore[union-attr]
    assert ldap is not None
    assert ldap.service_account_hash is not None
    assert ldap.service_account_hash.user_dn == "cn=x"


def test_both_spellings_of_a_section_are_merged() -> None:
    loaded = parse({":config": {"task_limit": 4}, "config": {"site_name": "x"}})
    assert (loaded.config.task_limit, loaded.config.site_name) == (4, "x")


def test_unknown_config_keys_are_kept_and_deprecated_keys_mapped() -> None:
    config = parse({"config": {"my_plugin_key": 1, "purge_unconfigured_folders": True}}).config
    assert config.extra == {"my_plugin_key": 1}
    assert config.purge_unconfigured_resources is True


def test_yaml_strings_for_numbers_and_booleans_are_accepted() -> None:
    config = parse({"config": {"task_limit": "7", "experimental_features": "false"}}).config
    assert (config.task_limit, config.experimental_features) == (7, False)


# --- environment --------------------------------------------------------------------------------


def test_environment_overrides_yaml() -> None:
    doc = {"config": {"task_limit": 4, "prefix": "yaml-"}}
    config = parse(doc, TASK_LIMIT="12", PREFIX="ci-", VM_LIFETIME_AUTH="48").config
    assert (config.task_limit, config.prefix, config.vm_lifetime_auth) == (12, "ci-", 48)


def test_integer_variables_without_digits_are_ignored() -> None:
    assert parse({"config": {"task_limit": 4}}, TASK_LIMIT="lots").config.task_limit == 4


@pytest.mark.parametrize("name", ["TASK_LIMIT", "READY_TTL", "REDIS_PORT"])
def test_integer_variables_with_trailing_garbage_are_errors(name: str) -> None:
    assert error_of({}, **{name: "12abc"}) == f"{name}: expected a whole number, got '12abc'"


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("TRUE", True), ("yes", True)])
def test_boolean_variables_are_parsed(raw: str, expected: bool) -> None:
    config = parse({"config": {"experimental_features": not expected}}, EXPERIMENTAL_FEATURES=raw).config
    assert config.experimental_features is expected


def test_bad_boolean_variable_is_an_error() -> None:
    assert error_of({}, USAGE_STATS="maybe").startswith("USAGE_STATS: expected true or false")


def test_empty_variables_are_ignored() -> None:
    assert parse({"config": {"prefix": "p-"}}, PREFIX="", TASK_LIMIT="  ").config.prefix == "p-"


def test_deprecated_purge_variable_still_works() -> None:
    assert parse({}, PURGE_UNCONFIGURED_FOLDERS="true").config.purge_unconfigured_resources is True


def test_redis_variables() -> None:
    redis = parse({}, REDIS_SERVER="db", REDIS_PORT="6380", REDIS_PASSWORD="p@ss/word").redis
    assert not redis.embedded
    assert redis.connection_url() == "redis://:p%40ss%2Fword@db:6380/0"
    assert parse({}, REDIS_URL="redis://x:1/2").redis.connection_url() == "redis://x:1/2"


def test_redis_connection_url_with_user() -> None:
    redis = RedisSettings(server="h", username="u", password="p")
    assert redis.connection_url() == "redis://u:p@h:6379/0"
    assert RedisSettings(server="h", username="u").connection_url() == "redis://u@h:6379/0"


def test_metrics_variables_create_sections_only_with_a_server() -> None:
    assert parse({}, STATSD_PORT="9000").statsd is None
    loaded = parse({}, STATSD_SERVER="s", STATSD_PORT="9000", GRAPHITE_SERVER="g")
    assert loaded.statsd is not None
    assert (loaded.statsd.server, loaded.statsd.port) == ("s", 9000)
    assert loaded.graphite is not None
    assert loaded.graphite.port == 2003
    assert loaded.metrics_backend == "statsd"


def test_auth_and_ldap_variables() -> None:
    auth = parse({}, AUTH_PROVIDER="ldap", LDAP_HOST="ldap.example", LDAP_PORT="636", LDAP_BASE="dc=x").auth
    assert auth is not None
    assert auth.ldap is not None
    assert (auth.provider, auth.ldap.host, auth.ldap.port, auth.ldap.base) == (
        "ldap",
        "ldap.example",
        636,
        ("dc=x",),
    )


def test_debug_and_tracing_variables() -> None:
    loaded = parse({}, VMPOOLER_DEBUG="1", VMPOOLER_TRACING_ENABLED="true")
    assert loaded.config.debug
    assert loaded.tracing.enabled
    assert not parse({}, VMPOOLER_DEBUG="false").config.debug


def test_domain_is_refused_in_favour_of_dns_configs() -> None:
    assert error_of({}, DOMAIN="example.com").startswith("DOMAIN:")
    assert ":dns_configs:" in error_of({}, DOMAIN="example.com")
    message = error_of({"config": {"domain": "example.com"}})
    assert message.startswith(":config: domain:")
    assert ":dns_configs:" in message


# --- sources ------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_vmpooler_config_variable_wins_over_a_file(tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", ":config:\n  site_name: file\n")
    loaded = load_settings(file, env={"VMPOOLER_CONFIG": ":config:\n  site_name: inline\n"})
    assert (loaded.config.site_name, loaded.source) == ("inline", "VMPOOLER_CONFIG")


def test_path_argument_wins_over_config_file_variable(tmp_path: Path) -> None:
    given_file = write(tmp_path / "a.yaml", ":config:\n  site_name: a\n")
    other = write(tmp_path / "b.yaml", ":config:\n  site_name: b\n")
    assert load_settings(given_file, env={"VMPOOLER_CONFIG_FILE": str(other)}).config.site_name == "a"
    assert load_settings(env={"VMPOOLER_CONFIG_FILE": str(other)}).config.site_name == "b"


def test_vmpooler_yaml_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no configuration found"):
        load_settings(env={})
    write(tmp_path / "vmpooler.yaml", ":config:\n  site_name: cwd\n")
    assert load_settings(env={}).config.site_name == "cwd"


def test_unreadable_and_invalid_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "missing.yaml"))):
        load_settings(tmp_path / "missing.yaml", env={})
    bad = write(tmp_path / "bad.yaml", ":config:\n  site_name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML at line \d+"):
        load_settings(bad, env={})
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        load_settings(write(tmp_path / "list.yaml", "- 1\n"), env={})


def test_extra_config_files_are_deep_merged(tmp_path: Path) -> None:
    main = write(
        tmp_path / "main.yaml",
        ":config:\n  site_name: main\n  allowed_tags: [a]\n:pools:\n  - name: one\n    template: t/one\n    size: 1\n",
    )
    write(
        tmp_path / "extra.yaml",
        ":config:\n  site_name: extra\n  task_limit: 3\n  allowed_tags: [a, b]\n"
        ":pools:\n  - name: two\n    template: t/two\n    size: 2\n",
    )
    loaded = load_settings(main, env={"EXTRA_CONFIG": str(tmp_path / "extra.yaml")})
    assert loaded.pool_names == ("one", "two")
    assert (loaded.config.site_name, loaded.config.task_limit) == ("main", 3)
    assert loaded.config.allowed_tags == ("a", "b")
    assert loaded.config.extra_config == (str(tmp_path / "extra.yaml"),)


def test_extra_config_key_resolves_next_to_the_main_file(tmp_path: Path) -> None:
    main = write(tmp_path / "main.yaml", ":config:\n  extra_config: extra.yaml\n")
    write(tmp_path / "extra.yaml", "pools:\n  - name: two\n    template: t/two\n")
    assert load_settings(main, env={}).pool_names == ("two",)


def test_deep_merge_and_normalize_keys() -> None:
    assert deep_merge({"a": 1, "l": [1], "d": {"x": 1}}, {"a": 2, "l": [1, 2], "d": {"y": 2}, "b": 3}) == {
        "a": 1,
        "l": [1, 2],
        "d": {"x": 1, "y": 2},
        "b": 3,
    }
    assert normalize_keys({":a": [{":b": {1: ":v"}}]}) == {"a": [{"b": {"1": ":v"}}]}


# --- aliases, candidates, domains, providers ----------------------------------------------------


def aliased() -> Settings:
    return parse(
        {
            "dns_configs": {"ex": {"dns_class": "dynamic-dns", "domain": "example.com"}},
            **pools(
                {"name": "debian-12", "template": "t/a", "alias": "debian", "dns_plugin": "ex"},
                {"name": "debian-11", "template": "t/b", "alias": ["debian", "old"]},
                {"name": "old", "template": "t/c", "alias": ["debian-12"]},
            ),
        }
    )


def test_alias_as_string_or_list() -> None:
    loaded = aliased()
    first, second, _ = loaded.pools
    assert (first.alias, first.alias_as_configured) == (("debian",), "debian")
    assert (second.alias, second.alias_as_configured) == (("debian", "old"), ["debian", "old"])
    assert loaded.aliases() == {
        "debian": ("debian-12", "debian-11"),
        "old": ("debian-11",),
        "debian-12": ("old",),
    }


def test_candidates_put_the_named_pool_first_then_aliased_pools() -> None:
    loaded = aliased()
    assert loaded.candidates("debian") == ("debian-12", "debian-11")
    assert loaded.candidates("old") == ("old", "debian-11")
    assert loaded.candidates("debian-12") == ("debian-12", "old")
    assert loaded.candidates("centos") == ()


def test_pool_lookup_and_configured_order() -> None:
    loaded = aliased()
    assert loaded.pool_names == ("debian-12", "debian-11", "old")
    assert loaded.pool("old") is loaded.pools[2]
    assert loaded.pool("debian") is None


def test_domain_for_follows_dns_plugin() -> None:
    loaded = aliased()
    assert loaded.domain_for("debian-12") == "example.com"
    assert loaded.domain_for("debian-11") is None
    assert loaded.domain_for("nope") is None
    assert loaded.dns_configs["ex"].options == {"dns_class": "dynamic-dns", "domain": "example.com"}


def test_providers_classes_legacy_vsphere_and_provider_for() -> None:
    loaded = parse(
        {
            "providers": {"lab": {"provider_class": "VSphere", "server": "vc"}},
            "vsphere": {"server": "old-vc"},
            **pools({"name": "a", "provider": "lab"}, {"name": "b", "provider": "vsphere"}, {"name": "c"}),
        }
    )
    assert loaded.provider_for("a").provider_class == "vsphere"
    assert loaded.provider_for("a").options == {"provider_class": "VSphere", "server": "vc"}
    assert loaded.provider_for("b").options == {"server": "old-vc"}
    assert loaded.provider_for("c") == DUMMY_PROVIDER


def test_known_provider_classes_can_be_extended() -> None:
    doc = {"providers": {"gce": {"project": "p"}}}
    assert (
        parse_settings(doc, env={}, known_provider_classes=("gce",)).providers["gce"].provider_class == "gce"
    )


# --- errors name the key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            pools({"name": "debian-12", "size": "five"}),
            ":pools: debian-12: size: expected a whole number >= 0, got 'five'",
        ),
        (
            pools({"name": "debian-12", "size": -1}),
            ":pools: debian-12: size: expected a whole number >= 0, got -1",
        ),
        ({"config": {"task_limit": [1]}}, ":config: task_limit: expected a whole number >= 0, got [1]"),
        ({"pools": {"name": "a"}}, ":pools: expected a list of pools, got {'name': 'a'}"),
        ({"config": [1]}, ":config: expected a mapping, got [1]"),
        (pools("a"), ":pools: [0]: expected a mapping with at least a name, got 'a'"),
        (pools({"size": 1}), ":pools: [0]: missing required key 'name'"),
        (
            pools({"name": "bad name"}),
            ":pools: [0]: name: expected letters, digits, '-' and '_' only, got 'bad name'",
        ),
        (
            pools({"name": "a"}, {"name": "a"}),
            ":pools: a: name: duplicate pool name (pool names must be unique)",
        ),
        (pools({"name": "a", "alias": 3}), ":pools: a: alias: expected a name or a list of names, got 3"),
        (
            pools({"name": "a", "provider": "gce"}),
            ":pools: a: provider: 'gce' is not configured under :providers:",
        ),
        (
            pools({"name": "a", "dns_plugin": "x"}),
            ":pools: a: dns_plugin: 'x' is not configured under :dns_configs:",
        ),
        ({"providers": {"gce": {}}}, ":providers: gce: provider_class: unknown provider class 'gce'"),
        (
            {"providers": {"x": {"provider_class": "gce"}}},
            ":providers: x: provider_class: unknown provider class 'gce'",
        ),
        ({"providers": {"x": 5}}, ":providers: x: expected a mapping, got 5"),
        (
            {"config": {"backend_weight": {"a": 1, "b": "x"}}},
            ":config: backend_weight: b: expected a whole number",
        ),
        ({"config": {"allowed_tags": ["a", 2]}}, ":config: allowed_tags[1]: expected a string, got 2"),
        (
            {"config": {"health_thresholds": {"dlq_max_warning": "z"}}},
            ":config: health_thresholds: dlq_max_warning:",
        ),
        (
            {"config": {"experimental_features": "maybe"}},
            ":config: experimental_features: expected true or false",
        ),
        ({"redis": {"port": 70000}}, ":redis: port: expected a whole number between 1 and 65535, got 70000"),
        ({"redis": {"url": "http://x"}}, ":redis: url: expected a redis://, rediss:// or unix:// URL"),
        ({"statsd": {"port": 1}}, ":statsd: missing required key 'server'"),
        (
            {"auth": {"provider": "kerberos"}},
            ":auth: provider: expected one of 'dummy', 'ldap', got 'kerberos'",
        ),
        ({"auth": {"provider": "ldap"}}, ":auth: ldap: host: required when the auth provider is ldap"),
        (
            {"auth": {"provider": "ldap", "ldap": {"host": "h", "port": "x"}}},
            ":auth: ldap: port: expected a whole",
        ),
        ({"tagfilter": {"url": "(unclosed"}}, ":tagfilter: url: invalid regular expression"),
        ({"tagfilter": {"url": 5}}, ":tagfilter: url: expected a string, got 5"),
        (
            {"rate_limits": {"vm_creation": {"limit": "a"}}},
            ":rate_limits: vm_creation: limit: expected a whole",
        ),
        ({"dns_configs": {"ex": {"domain": 5}}}, ":dns_configs: ex: domain: expected a string, got 5"),
    ],
)
def test_errors_name_the_key_and_what_was_expected(doc: dict[str, Any], expected: str) -> None:
    assert error_of(doc).startswith(expected)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_targets = st.sampled_from(
    [
        ("config", "task_limit"),
        ("config", "backend_weight"),
        ("config", "allowed_tags"),
        ("config", "health_thresholds"),
        ("redis", "port"),
        ("redis", "url"),
        ("auth", "ldap"),
        ("statsd", "server"),
        ("rate_limits", "authenticated"),
        ("tagfilter", "url"),
        ("dns_configs", "ex"),
        ("providers", "dummy"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    target=_targets, value=_values, pool_key=st.sampled_from(["size", "alias", "timeout", "provider", "name"])
)
def test_any_wrong_value_is_a_config_error_never_a_traceback(
    target: tuple[str, str], value: object, pool_key: str
) -> None:
    section, key = target
    doc: dict[str, Any] = (
        {section: {key: value}} if section != "auth" else {"auth": {"provider": "ldap", key: value}}
    )
    for candidate in (doc, {section: value}, pools({"name": "p", pool_key: value})):
        assert "\n" not in outcome(candidate)


# --- example ------------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    loaded = load_settings(EXAMPLE, env={})
    assert loaded.pool_names == ("debian-12", "centos-9", "win-2022")
    assert [pool.size for pool in loaded.pools] == [5, 3, 2]
    assert loaded.candidates("debian") == ("debian-12",)
    assert loaded.domain_for("win-2022") == "example.com"
    assert loaded.dns_configs["example"].dns_class == "dynamic-dns"
    assert loaded.provider_for("centos-9").options["createvm_max_time"] == 2
    assert (loaded.config.vm_lifetime, loaded.redis.embedded) == (24, True)


def test_example_config_loads_from_the_config_file_variable() -> None:
    assert load_settings(env={"VMPOOLER_CONFIG_FILE": str(EXAMPLE)}).source == str(EXAMPLE)


def test_metrics_sections_and_rate_limits() -> None:
    loaded = parse(
        {
            "prometheus": None,
            "graphite": {"server": "g"},
            "rate_limits": {"vm_creation": {"limit": 5}},
            "tagfilter": {"url": r"(.*)\/"},
        }
    )
    assert loaded.prometheus is not None
    assert loaded.prometheus.prometheus_endpoint == "/prometheus"
    assert loaded.metrics_backend == "graphite"
    assert loaded.rate_limits.vm_creation == RateLimit(limit=5, period=60)
    assert loaded.rate_limits.global_per_ip == RateLimit(limit=100, period=60)
    match = loaded.tagfilter_patterns["url"].match("foo.com/x.html")
    assert match is not None
    assert match.group(1) == "foo.com"


def test_ldap_lists_and_symbol_encryption() -> None:
    auth = parse(
        {
            ":auth": {
                ":provider": "ldap",
                ":ldap": {
                    "host": "h",
                    "base": ["ou=a", "ou=b"],
                    "user_object": "uid",
                    "encryption": {":method": ":start_tls", ":tls_options": {":ssl_version": "TLSv1_2"}},
                },
            }
        }
    ).auth
    assert auth is not None
    assert auth.ldap is not None
    assert auth.ldap.encryption is not None
    assert (auth.ldap.base, auth.ldap.user_object) == (("ou=a", "ou=b"), ("uid",))
    assert auth.ldap.encryption.method == "start_tls"
    assert auth.ldap.encryption.tls_options == {"ssl_version": "TLSv1_2"}


def test_global_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        GlobalSettings().task_limit = 3  # type: ignore[misc]


def test_a_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    binary = tmp_path / "vmpooler.yaml"
    binary.write_bytes(b"\xff\xfe:config:")
    with pytest.raises(ConfigError, match=r"vmpooler.yaml: not UTF-8 text \(byte 0\)"):
        load_settings(binary, env={})
