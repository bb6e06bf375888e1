"""Metric naming: usage stats from Jenkins URLs (§2.6), dotted names to Prometheus families (§5.1),
HTTP path normalisation (§1.5), and the number format of statsd/Graphite."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from commands.metrics import metric_segment
from projectors.metrics import usage_labels
from vmpooler._prometheus_names import PrometheusFamilies
from vmpooler.metrics import number
from web.prometheus import normalise_path


def test_usage_without_a_build_url_names_the_user_or_unauthenticated() -> None:
    assert usage_labels("", "", "allocate", "debian-12") == ["user.unauthenticated.allocate.debian-12"]
    assert usage_labels("first.last", "", "destroy", "pool.x") == ["user.first_last.destroy.pool_x"]


def test_usage_of_a_jenkins_job_with_matrix_labels() -> None:
    url = (
        "https://jenkins.example.net/job/platform_puppet-agent_integration-suite_main/"
        "LABEL=x,RMM_COMPONENT_TO_TEST_NAME=agent.core/42/"
    )
    assert usage_labels("bob", url, "destroy", "pool1") == [
        "user.bob.destroy.pool1",
        "usage_jenkins_instance.jenkins_example_net.platform.destroy.pool1",
        "usage_branch_project.main.puppet-agent.destroy.pool1",
        "usage_job_component.integration-suite.agent_core.destroy.pool1",
    ]


def test_usage_of_litmus_and_of_malformed_urls() -> None:
    litmus = usage_labels("", "https://ci/job/litmus_thing/1", "allocate", "p")
    assert litmus == ["user.unauthenticated.allocate.p", "usage_litmus.unauthenticated.allocate.p"]
    short = usage_labels("u", "https://host", "destroy", "p")
    assert short[1:] == [
        "usage_jenkins_instance.host.unknown.destroy.p",
        "usage_branch_project.unknown.unknown.destroy.p",
        "usage_job_component.unknown.none.destroy.p",
    ]


def test_segments_never_break_a_dotted_or_statsd_name() -> None:
    assert metric_segment("a.b c:d|e@f") == "a_b_c_d_e_f"
    assert metric_segment("") == "unknown"


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        ("/api/v3/vm/abc123", "/api/v3/vm"),
        ("/api/v3/vm/abc123/disk/10", "/api/v3/vm"),
        ("/api/v3/vm", "/api/v3/vm"),
        ("/api/v3/ondemandvm/8f2e", "/api/v3/ondemandvm"),
        ("/api/v3/token/secret", "/api/v3/token"),
        ("/dashboard/lib/d3.js", "/dashboard/lib"),
        ("/api/v3/status", "/api/v3/status"),
    ],
)
def test_http_paths_lose_hostnames_and_tokens(path: str, normalised: str) -> None:
    assert normalise_path(path) == normalised


def test_dotted_names_map_to_families_with_labels() -> None:
    registry = CollectorRegistry()
    families = PrometheusFamilies("vmp", "inst", registry)
    families.increment("checkout.success.debian", 2)
    families.increment("vmpooler_errors.markedasfailed.debian", 1)
    families.increment("user.bob.allocate.debian", 1)
    families.gauge("ready.debian", 3.5)
    families.observe("time_to_ready_state.debian", 42.0)
    families.increment("no.such.family", 1)  # dropped (logged once)
    families.gauge("checkout.success.debian", 1)  # wrong kind: dropped
    get = registry.get_sample_value
    assert get("vmp_checkout_success_total", {"vmpooler_instance": "inst", "poolname": "debian"}) == 2
    assert (
        get(
            "vmp_vmpooler_errors_total", {"vmpooler_instance": "inst", "metric_path": "markedasfailed.debian"}
        )
        == 1
    )
    assert (
        get(
            "vmp_user_total",
            {"vmpooler_instance": "inst", "user": "bob", "operation": "allocate", "poolname": "debian"},
        )
        == 1
    )
    assert get("vmp_ready", {"vmpooler_instance": "inst", "poolname": "debian"}) == 3.5
    assert get("vmp_time_to_ready_state_sum", {"vmpooler_instance": "inst", "poolname": "debian"}) == 42.0
    assert (
        get(
            "vmp_time_to_ready_state_bucket",
            {"vmpooler_instance": "inst", "poolname": "debian", "le": "30.0"},
        )
        == 0
    )


def test_numbers_have_no_exponent_or_trailing_zeros() -> None:
    assert [number(v) for v in (3, 12.5, 30000.0, 1e7, 0.000001, 0)] == [
        "3",
        "12.5",
        "30000",
        "10000000",
        "0.000001",
        "0",
    ]
