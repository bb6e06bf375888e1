"""API input validation: vmpooler v3's exact messages, and no crash on any input."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from web.validation import (
    MAX_BODY_BYTES,
    MAX_LIFETIME_HOURS,
    ValidationError,
    ValidationFailure,
    VmUpdate,
    VmUpdateRejected,
    apply_tagfilter,
    checkout_request_from_body,
    checkout_request_from_path,
    parse_json_body,
    parse_json_payload,
    parse_vm_update,
    shorten_hostname,
    unwrap,
    validate_count,
    validate_disk_size,
    validate_hostname,
    validate_lifetime_update,
    validate_pool_name,
    validate_tags,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def error(message: str) -> ValidationFailure:
    return ValidationFailure(message)


def nested(depth: int) -> bytes:
    """An object ``depth`` containers deep, innermost empty."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


# --- failure values -------------------------------------------------------------------------------------


def test_failure_renders_error_body_with_ok_first() -> None:
    failure = ValidationFailure("Invalid pool name format")
    assert failure.status == 400
    assert list(failure.body().items()) == [("ok", False), ("error", "Invalid pool name format")]


def test_failure_renders_message_body_for_ondemand_endpoints() -> None:
    failure = ValidationFailure("JSON payload could not be parsed", key="message")
    assert failure.body() == {"ok": False, "message": "JSON payload could not be parsed"}


def test_update_rejection_renders_failure_list() -> None:
    rejected = VmUpdateRejected(("Unknown argument x.", "Tag key too long"))
    assert rejected.status == 400
    assert rejected.body() == {"ok": False, "failure": ["Unknown argument x.", "Tag key too long"]}


def test_unwrap_returns_values_and_raises_failures() -> None:
    assert unwrap(validate_count("3")) == 3
    with pytest.raises(ValidationError) as caught:
        unwrap(validate_count("0"))
    assert caught.value.failure == error("VM count must be at least 1")
    assert str(caught.value) == "VM count must be at least 1"


# --- JSON bodies ----------------------------------------------------------------------------------------


def test_empty_body_is_an_empty_object() -> None:
    assert parse_json_body(b"") == {}


def test_object_body_is_returned() -> None:
    assert parse_json_body(b'{"pool1": "2", "pool2": 1}') == {"pool1": "2", "pool2": 1}


@pytest.mark.parametrize("raw", [b"{", b"{'a': 1}", b"   ", b"NaN", b'{"a": 1} x', b"\xff", b'{"a": "\xff"}'])
def test_malformed_body_reports_the_parser_message(raw: bytes) -> None:
    failure = parse_json_body(raw)
    assert isinstance(failure, ValidationFailure)
    assert failure.key == "error"
    assert failure.status == 400
    assert failure.message.startswith("Invalid JSON: ")
    assert len(failure.message) > len("Invalid JSON: ")


@pytest.mark.parametrize("raw", [b"[]", b'["a"]', b'"pool"', b"3", b"null", b"true", b"[[[[[[[]]]]]]]"])
def test_non_object_body_is_rejected(raw: bytes) -> None:
    assert parse_json_body(raw) == error("Request body must be a JSON object")


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_body_up_to_depth_five_is_accepted(depth: int) -> None:
    assert isinstance(parse_json_body(nested(depth)), dict)


@pytest.mark.parametrize(
    "raw",
    [
        nested(6),
        b'{"a": [[[[{}]]]]}',
        b'{"a": [1, [2, [3, [4, [5]]]]]}',
        b'{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}',
    ],
)
def test_body_deeper_than_five_is_too_complex(raw: bytes) -> None:
    assert parse_json_body(raw) == error("Request body too complex")


def test_scalars_do_not_add_depth() -> None:
    assert parse_json_body(b'{"a":{"b":{"c":{"d":{"e":1}}}}}') == {"a": {"b": {"c": {"d": {"e": 1}}}}}


def test_body_at_the_size_limit_is_accepted() -> None:
    raw = b'{"a": "' + b"x" * (MAX_BODY_BYTES - 9) + b'"}'
    assert len(raw) == MAX_BODY_BYTES
    assert isinstance(parse_json_body(raw), dict)


def test_body_over_the_size_limit_is_too_large() -> None:
    raw = b'{"a": "' + b"x" * (MAX_BODY_BYTES - 8) + b'"}'
    assert parse_json_body(raw) == error("Request body too large")


def test_size_is_checked_before_parsing() -> None:
    assert parse_json_body(b"{" * (MAX_BODY_BYTES + 1)) == error("Request body too large")


def test_pathologically_deep_json_is_invalid_not_a_crash() -> None:
    failure = parse_json_body(b"[" * 5000 + b"]" * 5000)
    assert isinstance(failure, ValidationFailure)
    assert failure.message.startswith("Invalid JSON: ")


def test_duplicate_keys_keep_the_last_value() -> None:
    assert parse_json_body(b'{"a": "1", "a": "2"}') == {"a": "2"}


def test_payload_parses_objects() -> None:
    assert parse_json_payload(b'{"pool1": "1", "request_id": "r1"}') == {"pool1": "1", "request_id": "r1"}


@pytest.mark.parametrize("raw", [b"", b" ", b"{", b"nope", b"\xff"])
def test_unparsable_payload_uses_the_message_key(raw: bytes) -> None:
    failure = parse_json_payload(raw)
    assert failure == ValidationFailure("JSON payload could not be parsed", key="message")
    assert isinstance(failure, ValidationFailure)
    assert failure.body() == {"ok": False, "message": "JSON payload could not be parsed"}


@pytest.mark.parametrize("raw", [b"null", b"false"])
def test_null_payload_means_no_payload(raw: bytes) -> None:
    assert parse_json_payload(raw) is None


@pytest.mark.parametrize("raw", [b"[1]", b"3", b'"a"', b"true"])
def test_non_object_payload_is_rejected(raw: bytes) -> None:
    assert parse_json_payload(raw) == ValidationFailure("Request body must be a JSON object", key="message")


def test_payload_limits_size_and_depth() -> None:
    assert parse_json_payload(b" " * (MAX_BODY_BYTES + 1)) == ValidationFailure(
        "Request body too large", key="message"
    )
    assert parse_json_payload(nested(6)) == ValidationFailure("Request body too complex", key="message")


# --- pool names and counts ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pool1", "debian-12-x86_64", "A", "_-_", "p" * 100])
def test_valid_pool_names(name: str) -> None:
    assert validate_pool_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (None, "Pool name is required"),
        ("", "Pool name is required"),
        ("p" * 101, "Pool name too long"),
        ("centos.7", "Invalid pool name format"),
        ("a b", "Invalid pool name format"),
        ("pool\n", "Invalid pool name format"),
        ("pool\u0661", "Invalid pool name format"),  # an Arabic-Indic digit
        ("../etc", "Invalid pool name format"),
        (5, "Invalid pool name format"),
    ],
)
def test_invalid_pool_names(name: object, message: str) -> None:
    assert validate_pool_name(name) == error(message)


@pytest.mark.parametrize(("value", "expected"), [("1", 1), (1, 1), ("100", 100), (100, 100), ("007", 7)])
def test_valid_counts(value: object, expected: int) -> None:
    assert validate_count(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "VM count is required"),
        ("0", "VM count must be at least 1"),
        (0, "VM count must be at least 1"),
        ("101", "VM count must be at most 100"),
        (101, "VM count must be at most 100"),
        ("9" * 5000, "VM count must be at most 100"),
        (10**4000, "VM count must be at most 100"),
        ("0" * 5000 + "5", 5),
        ("abc", "VM count must be a valid integer"),
        ("", "VM count must be a valid integer"),
        ("-1", "VM count must be a valid integer"),
        (-1, "VM count must be a valid integer"),
        (" 1", "VM count must be a valid integer"),
        ("1\n", "VM count must be a valid integer"),
        ("1.0", "VM count must be a valid integer"),
        ("+1", "VM count must be a valid integer"),
        ("\u0663", "VM count must be a valid integer"),
        (1.0, "VM count must be a valid integer"),
        (True, "VM count must be a valid integer"),
        ([1], "VM count must be a valid integer"),
        ({"a": 1}, "VM count must be a valid integer"),
    ],
)
def test_count_failures(value: object, message: str | int) -> None:
    expected = message if isinstance(message, int) else error(message)
    assert validate_count(value) == expected


def test_count_messages_use_the_given_name_and_bounds() -> None:
    assert validate_count(None, "Lifetime", 1, 168) == error("Lifetime is required")
    assert validate_count("x", "Lifetime", 1, 168) == error("Lifetime must be a valid integer")
    assert validate_count("0", "Lifetime", 1, 168) == error("Lifetime must be at least 1")
    assert validate_count("169", "Lifetime", 1, 168) == error("Lifetime must be at most 168")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        ("2048", 2048),
        ("0", error("Disk size must be at least 1")),
        ("3000", error("Disk size must be at most 2048")),
        ("8gb", error("Disk size must be a valid integer")),
        (None, error("Disk size is required")),
    ],
)
def test_disk_size(value: object, expected: object) -> None:
    assert validate_disk_size(value) == expected


# --- hostnames ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostname",
    [
        "a",
        "0",
        "testhost",
        "TestHost",
        "abc-def-1",
        "vm1.example.com",
        "VM1.EXAMPLE.COM",
        "a" * 63,
        ".".join(["a" * 63] * 4)[:253].rstrip("."),
    ],
)
def test_valid_hostnames(hostname: str) -> None:
    assert validate_hostname(hostname) == hostname


@pytest.mark.parametrize(
    ("hostname", "message"),
    [
        (None, "Hostname is required"),
        ("", "Hostname is required"),
        ("a." * 126 + "ab", "Hostname too long"),
        ("a" * 64, "Invalid hostname format"),
        ("-abc", "Invalid hostname format"),
        ("abc-", "Invalid hostname format"),
        ("a..b", "Invalid hostname format"),
        ("abc.", "Invalid hostname format"),
        (".abc", "Invalid hostname format"),
        ("under_score", "Invalid hostname format"),
        ("a b", "Invalid hostname format"),
        ("abc\n", "Invalid hostname format"),
        ("\u212a", "Invalid hostname format"),  # the Kelvin sign folds to "k" without re.ASCII
        ("héllo", "Invalid hostname format"),
        (7, "Invalid hostname format"),
    ],
)
def test_invalid_hostnames(hostname: object, message: str) -> None:
    assert validate_hostname(hostname) == error(message)


def test_hostname_length_limit_is_253() -> None:
    at_limit = "a." * 126 + "a"
    assert len(at_limit) == 253
    assert validate_hostname(at_limit) == at_limit


@pytest.mark.parametrize(
    ("hostname", "short"),
    [("vm1.example.com", "vm1"), ("vm1", "vm1"), ("vm1.", "vm1"), (".vm1.x", "vm1"), ("...", ""), ("", "")],
)
def test_shorten_hostname(hostname: str, short: str) -> None:
    assert shorten_hostname(hostname) == short


# --- tags -----------------------------------------------------------------------------------------------


def test_valid_tags_have_no_failures() -> None:
    tags = {
        "url": "http://foo.com/x.html",
        "user": "me@example.com",
        "a.b-c_d": "x y\tz",
        "k" * 50: "v" * 255,
    }
    assert validate_tags(tags, None) == []


@pytest.mark.parametrize(
    ("tags", "failures"),
    [
        ({"": "v"}, ["Tag key is required"]),
        ({"k" * 51: "v"}, ["Tag key too long"]),
        ({"bad key": "v"}, ["Invalid tag key format"]),
        ({"bad/key": "v"}, ["Invalid tag key format"]),
        ({"k": "v" * 256}, ["Tag value too long"]),
        ({"k": "<script>"}, ["Tag value contains invalid characters"]),
        ({"k": "a;b"}, ["Tag value contains invalid characters"]),
        ({"k": "master, agent"}, []),
        ({"k": "héllo"}, ["Tag value contains invalid characters"]),
        ({"k": None}, []),
        ({"k": ""}, []),
        ({"k": 5}, ["Tag value for k must be a string"]),
        ({"k": False}, ["Tag value for k must be a string"]),
        ({"k": ["a"]}, ["Tag value for k must be a string"]),
        ({"": 5}, ["Tag key is required"]),
        ({"a b": "<", "ok": "fine", "k": "v" * 300}, ["Invalid tag key format", "Tag value too long"]),
    ],
)
def test_tag_failures(tags: dict[str, Any], failures: list[str]) -> None:
    assert validate_tags(tags, None) == failures


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("url", "You provided tags (url) as something other than a hash."),
        (None, "You provided tags () as something other than a hash."),
        (["a", "b"], 'You provided tags (["a","b"]) as something other than a hash.'),
        (5, "You provided tags (5) as something other than a hash."),
        (True, "You provided tags (true) as something other than a hash."),
    ],
)
def test_non_object_tags_fail_instead_of_crashing(tags: object, message: str) -> None:
    assert validate_tags(tags, ["url"]) == [message]


def test_tags_outside_allowed_tags_are_named() -> None:
    tags = {"url": "x", "bogus": "y", "other": "z"}
    assert validate_tags(tags, ["url", "user"]) == ["You provided unsuppored tags (bogus, other)."]


def test_allowed_tags_message_follows_the_per_tag_failures() -> None:
    assert validate_tags({"bad key": "v"}, ["url"]) == [
        "Invalid tag key format",
        "You provided unsuppored tags (bad key).",
    ]


def test_empty_allowed_tags_allow_no_tag() -> None:
    assert validate_tags({"url": "x"}, []) == ["You provided unsuppored tags (url)."]
    assert validate_tags({}, []) == []


def test_tagfilter_keeps_the_capture_groups() -> None:
    filters = {"url": r"(.*)\/"}
    assert apply_tagfilter({"url": "foo.com/x.html"}, filters) == {"url": "foo.com"}


def test_tagfilter_concatenates_groups_and_ignores_unmatched_ones() -> None:
    filters = {"job": r"(\w+)-(\d+)(-x)?"}
    assert apply_tagfilter({"job": "build-42"}, filters) == {"job": "build42"}


def test_tagfilter_leaves_non_matching_values_and_unfiltered_tags() -> None:
    filters = {"url": r"(.*)\/"}
    tags = {"url": "foo.com", "user": "a/b"}
    assert apply_tagfilter(tags, filters) == {"url": "foo.com", "user": "a/b"}


def test_tagfilter_drops_empty_values() -> None:
    filters = {"url": "foo", "path": r"(x*)/"}
    tags = {"a": "", "b": None, "url": "foo.com", "path": "/", "keep": "v"}
    assert apply_tagfilter(tags, filters) == {"keep": "v"}


def test_tagfilter_accepts_compiled_patterns_and_ruby_line_anchors() -> None:
    assert apply_tagfilter({"url": "a/b"}, {"url": re.compile(r"(\w)/")}) == {"url": "a"}
    assert apply_tagfilter({"note": "x\nyz"}, {"note": r"^(y)"}) == {"note": "y"}


# --- lifetime -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hours"),
    [("12", 12), (12, 12), ("20000", 20000), ("12abc", 12), (" 7", 7), ("+3", 3), ("1_000", 1000), (2.9, 2)],
)
def test_lifetime_reads_like_ruby_to_i(value: object, hours: int) -> None:
    assert validate_lifetime_update(value, None) == hours


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0", "0"),
        (0, "0"),
        ("-5", "-5"),
        (-5, "-5"),
        ("abc", "abc"),
        ("", ""),
        (None, ""),
        (0.5, "0.5"),
        (True, "true"),
        ([1], "[1]"),
        ({"a": 1}, '{"a":1}'),
    ],
)
def test_lifetime_must_be_positive(value: object, shown: str) -> None:
    assert validate_lifetime_update(value, 168) == error(f"Lifetime must be a positive integer (got {shown})")


def test_lifetime_at_or_over_the_upper_limit_is_rejected() -> None:
    assert validate_lifetime_update("167", 168) == 167
    assert validate_lifetime_update("168", 168) == error(
        "You provided a lifetime (168) that exceeds the configured maximum of 168."
    )
    assert validate_lifetime_update("200", 168) == error(
        "You provided a lifetime (200) that exceeds the configured maximum of 168."
    )


def test_a_zero_upper_limit_rejects_every_lifetime_after_the_positivity_check() -> None:
    assert validate_lifetime_update("0", 0) == error("Lifetime must be a positive integer (got 0)")
    assert validate_lifetime_update("1", 0) == error(
        "You provided a lifetime (1) that exceeds the configured maximum of 0."
    )


def test_lifetime_has_a_hard_cap_without_a_configured_limit() -> None:
    assert validate_lifetime_update(MAX_LIFETIME_HOURS, None) == MAX_LIFETIME_HOURS
    cap = error(f"Lifetime must be at most {MAX_LIFETIME_HOURS}")
    assert validate_lifetime_update(MAX_LIFETIME_HOURS + 1, None) == cap
    assert validate_lifetime_update("9" * 5000, None) == cap


# --- the whole PUT body ---------------------------------------------------------------------------------


def update(body: dict[str, Any], **overrides: Any) -> VmUpdate | VmUpdateRejected:
    settings: dict[str, Any] = {"max_lifetime_upper_limit": None, "allowed_tags": None, "tagfilter": {}}
    settings.update(overrides)
    return parse_vm_update(body, **settings)


def test_empty_update_changes_nothing() -> None:
    assert update({}) == VmUpdate()


def test_update_returns_lifetime_and_filtered_tags() -> None:
    body = {"lifetime": "36", "tags": {"url": "foo.com/x.html", "empty": "", "none": None, "user": "me"}}
    result = update(body, tagfilter={"url": r"(.*)\/"})
    assert result == VmUpdate(lifetime=36, tags={"url": "foo.com", "user": "me"})


def test_unknown_arguments_name_the_key() -> None:
    assert update({"lifetme": 5}) == VmUpdateRejected(("Unknown argument lifetme.",))


def test_update_collects_every_failure_in_body_order() -> None:
    body = {"bogus": 1, "tags": {"bad key": "v", "k": "<"}, "lifetime": "200"}
    result = update(body, max_lifetime_upper_limit=168, allowed_tags=["k"])
    assert result == VmUpdateRejected(
        (
            "Unknown argument bogus.",
            "Invalid tag key format",
            "Tag value contains invalid characters",
            "You provided unsuppored tags (bad key).",
            "You provided a lifetime (200) that exceeds the configured maximum of 168.",
        )
    )


def test_update_with_a_bad_tag_stores_nothing() -> None:
    result = update({"lifetime": "5", "tags": {"url": "x"}}, allowed_tags=["user"])
    assert isinstance(result, VmUpdateRejected)
    assert result.body() == {"ok": False, "failure": ["You provided unsuppored tags (url)."]}


# --- checkout requests ----------------------------------------------------------------------------------


def test_checkout_body_keeps_body_order() -> None:
    assert checkout_request_from_body({"pool2": "2", "pool1": 1}) == [("pool2", 2), ("pool1", 1)]


def test_empty_checkout_body_asks_for_nothing() -> None:
    assert checkout_request_from_body({}) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"bad.pool": "1"}, "Invalid pool name format"),
        ({"": "1"}, "Pool name is required"),
        ({"p" * 101: "1"}, "Pool name too long"),
        ({"pool1": "0"}, "VM count must be at least 1"),
        ({"pool1": "101"}, "VM count must be at most 100"),
        ({"pool1": "abc"}, "VM count must be a valid integer"),
        ({"pool1": None}, "VM count is required"),
        ({"pool1": "1", "bad.pool": "x"}, "Invalid pool name format"),
        ({"pool1": "x", "bad.pool": "1"}, "VM count must be a valid integer"),
    ],
)
def test_checkout_body_reports_the_first_failure(body: dict[str, Any], message: str) -> None:
    assert checkout_request_from_body(body) == error(message)


def test_checkout_path_counts_each_occurrence_in_first_seen_order() -> None:
    assert checkout_request_from_path("pool1+pool1+pool2+pool2+pool2") == [("pool1", 2), ("pool2", 3)]
    assert checkout_request_from_path("b+a+b") == [("b", 2), ("a", 1)]


def test_checkout_path_allows_names_the_body_form_refuses() -> None:
    assert checkout_request_from_path("centos.7") == [("centos.7", 1)]


@pytest.mark.parametrize("segment", ["a++b", "a+", "+a", "+"])
def test_checkout_path_rejects_empty_names(segment: str) -> None:
    assert checkout_request_from_path(segment) == error("Invalid pool name format")


def test_empty_checkout_path_is_rejected() -> None:
    assert checkout_request_from_path("") == error("Pool name is required")


def test_checkout_path_allows_at_most_100_vms() -> None:
    assert checkout_request_from_path("+".join(["a", "b"] * 50)) == [("a", 50), ("b", 50)]
    assert checkout_request_from_path("+".join(["a"] * 101)) == error("VM count must be at most 100")
    assert checkout_request_from_path("+" * 10_000) == error("VM count must be at most 100")


def test_checkout_path_cap_is_adjustable() -> None:
    assert checkout_request_from_path("a+a+a", max_total=2) == error("VM count must be at most 2")


# --- no input crashes -----------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail(raw: bytes) -> None:
    assert isinstance(parse_json_body(raw), dict | ValidationFailure)
    assert isinstance(parse_json_payload(raw), dict | ValidationFailure | None)


@given(json_values)
def test_any_json_document_parses_or_fails(value: Any) -> None:
    raw = msgspec.json.encode(value)
    result = parse_json_body(raw)
    if isinstance(value, dict) and result != error("Request body too complex") and len(raw) <= MAX_BODY_BYTES:
        assert result == value
    else:
        assert isinstance(result, ValidationFailure | dict)
    assert isinstance(parse_json_payload(raw), dict | ValidationFailure | None)


@given(st.integers(min_value=1, max_value=12))
def test_depth_limit_is_exactly_five(depth: int) -> None:
    result = parse_json_body(nested(depth))
    assert isinstance(result, dict) == (depth <= 5)


@given(st.one_of(st.text(), json_values))
def test_single_value_validators_never_crash(value: Any) -> None:
    for validate in (validate_pool_name, validate_count, validate_disk_size, validate_hostname):
        assert isinstance(validate(value), str | int | ValidationFailure)
    lifetime = validate_lifetime_update(value, 168)
    assert isinstance(lifetime, ValidationFailure) or 0 < lifetime < 168
    assert all(isinstance(f, str) for f in validate_tags(value, ["url"]))


@given(st.text())
def test_shorten_hostname_is_never_dotted(hostname: str) -> None:
    assert "." not in shorten_hostname(hostname)


@given(st.integers(min_value=1, max_value=100), st.booleans())
def test_counts_in_range_round_trip(count: int, as_text: bool) -> None:
    assert validate_count(str(count) if as_text else count) == count


@given(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True), min_size=1, max_size=5))
def test_hostnames_built_from_valid_labels_are_accepted(labels: list[str]) -> None:
    hostname = ".".join(labels)
    assert validate_hostname(hostname.upper()) == hostname.upper()
    assert shorten_hostname(hostname) == labels[0]


@given(st.dictionaries(st.text(max_size=60), json_values, max_size=6), st.booleans())
def test_any_put_body_is_accepted_or_rejected(body: dict[str, Any], restrict: bool) -> None:
    result = parse_vm_update(
        body,
        max_lifetime_upper_limit=168,
        allowed_tags=["url"] if restrict else None,
        tagfilter={"url": r"(.*)\/"},
    )
    assert isinstance(result, VmUpdate | VmUpdateRejected)
    if isinstance(result, VmUpdate):
        assert all(isinstance(v, str) and v for v in result.tags.values())


@given(st.dictionaries(st.text(max_size=20), json_values, max_size=6))
def test_any_checkout_body_is_validated(body: dict[str, Any]) -> None:
    result = checkout_request_from_body(body)
    if not isinstance(result, ValidationFailure):
        assert [name for name, _ in result] == list(body)
        assert all(1 <= count <= 100 for _, count in result)


@given(st.text(alphabet=st.sampled_from("ab.+-_ é"), max_size=300))
def test_any_checkout_path_is_counted_or_rejected(segment: str) -> None:
    result = checkout_request_from_path(segment)
    if not isinstance(result, ValidationFailure):
        assert sum(count for _, count in result) == len(segment.split("+")) <= 100
        assert all(name for name, _ in result)
