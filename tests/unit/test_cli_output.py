"""What the CLI prints for people: control characters escaped, JSON still JSON, usage errors on one
line with exit code 2."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import Recorded, VmTagged
from vmpooler._cli_parser import parse_args
from vmpooler._output import SafeFormatter, json_printable, printable
from vmpooler.maintenance import format_event

HOSTILE = "evil\x1b[31m\nfake line\r\x07\x7f\u009b2J\u202egnp.exe\U000e0041"


def test_printable_escapes_every_control_character_and_keeps_the_rest() -> None:
    assert printable("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    shown = printable(HOSTILE)
    assert shown.isprintable()
    assert shown == "evil\\x1b[31m\\nfake line\\r\\x07\\x7f\\x9b2J\\u202egnp.exe\\U000e0041"


@given(st.text())
def test_json_printable_is_the_same_json_and_printable(text: str) -> None:
    for indent in (None, 2):
        encoded = json.dumps({"k": [text]}, ensure_ascii=False, indent=indent)
        safe = json_printable(encoded)
        assert json.loads(safe) == {"k": [text]}
        assert all(line.isprintable() for line in safe.split("\n"))


def recorded(actor: str, tag: str) -> Recorded:
    return Recorded(
        stream="pool1",
        position="1-0",
        event_id="e1",
        type="vm.tagged",
        at=1_767_225_600_000,
        vm="brisk-quiet-heron",
        actor=actor,
        correlation_id="c",
        causation_id="c",
        version=1,
        event=VmTagged(tags={"team": tag}),
    )


def test_an_event_line_cannot_carry_escape_codes_or_fake_lines() -> None:
    line = format_event(recorded(f"api:{HOSTILE}", HOSTILE), as_json=False)
    assert line.isprintable()
    assert "api:evil\\x1b[31m\\nfake line" in line


def test_an_event_as_json_is_printable_and_decodes_to_the_original() -> None:
    line = format_event(recorded(f"api:{HOSTILE}", HOSTILE), as_json=True)
    assert line.isprintable()
    decoded = json.loads(line)
    assert decoded["actor"] == f"api:{HOSTILE}"
    assert decoded["event"]["tags"] == {"team": HOSTILE}


def test_log_lines_escape_the_message_but_keep_a_traceback() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "user %s", (HOSTILE,), sys.exc_info())
    first, *rest = formatter.format(record).split("\n")
    assert first.startswith("ERROR user evil\\x1b[31m\\nfake line")
    assert rest[0] == "Traceback (most recent call last):"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["events", "--since"], "vmpooler events: argument --since: expected one argument"),
        (
            ["--port", "99999"],
            "vmpooler: argument --port: expected a port number from 1 to 65535, got '99999'",
        ),
        (
            ["events", "--vm", "a", "--pool", "b"],
            "vmpooler events: argument --pool: not allowed with argument --vm",
        ),
        (["archive", "--to", "d"], "vmpooler archive: the following arguments are required: --before"),
        (["config"], "vmpooler config: the following arguments are required: action"),
        (["nope"], "vmpooler: argument command: invalid choice: 'nope'"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(message), err
    assert err.rstrip("\n").endswith("--help)")


def test_options_default_whatever_the_command() -> None:
    args = parse_args(["events"])
    assert (args.config, args.log_level, args.strict, args.port) == (None, "INFO", False, 4567)
    assert parse_args(["--strict", "manager", "--check"]).check is True
    assert parse_args(["config", "check", "--strict", "--format", "json"]).format == "json"
