"""The event vocabulary: every event round-trips the codec, the envelope decodes, upcasters run."""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import events
from events import codec
from events._base import Event
from events.codec import (
    SCHEMA_VERSION,
    AnyEvent,
    Recorded,
    decode_body,
    decode_entry,
    encode,
    register_upcaster,
)

UNION: tuple[type[Event], ...] = typing.get_args(AnyEvent)


def _tag(cls: type[Event]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), cls
    return tag


UNION_TAGS = {_tag(cls) for cls in UNION}
_DEFAULT = object()


def _leaf(tp: Any) -> st.SearchStrategy[Any]:
    """Values a JSON body can carry for ``tp`` (finite floats, 64-bit ints)."""
    origin = typing.get_origin(tp)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is int:
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=20)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(_leaf(key), _leaf(value), max_size=4)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_leaf(a) for a in typing.get_args(tp)))
    raise AssertionError(f"no strategy for field type {tp!r}: extend _leaf")


def _builder(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Every field of ``cls``, optional ones included (left at their default half the time)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in msgspec.structs.fields(cls):
        value = _leaf(f.type)
        required = f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
        fields[f.name] = value if required else st.one_of(st.just(_DEFAULT), value)

    def build(**kwargs: Any) -> Event:
        return cls(**{k: v for k, v in kwargs.items() if v is not _DEFAULT})

    return st.builds(build, **fields)


def _every_event_class() -> set[type[Event]]:
    """Every concrete event class defined anywhere (subclasses of ``Event`` with a tag)."""
    found: set[type[Event]] = set()
    todo = list(Event.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__struct_config__.tag is not None and cls.__module__.startswith("events."):
            found.add(cls)
    return found


BUILDERS: dict[str, st.SearchStrategy[Event]] = {
    _tag(cls): _builder(cls) for cls in sorted(_every_event_class(), key=lambda c: c.__name__)
}


def test_every_defined_event_is_in_the_union_and_covered() -> None:
    """A class missing from ``AnyEvent`` could be encoded but never decoded from the log."""
    assert set(BUILDERS) == UNION_TAGS
    assert len(UNION_TAGS) == len(UNION)  # tags are unique
    assert {t for t in dir(events) if not t.startswith("_")} >= {c.__name__ for c in UNION}


@pytest.mark.parametrize("tag", sorted(UNION_TAGS))
@given(data=st.data())
def test_every_event_round_trips(tag: str, data: st.DataObject) -> None:
    event = data.draw(BUILDERS[tag])
    raw = encode(event)
    assert msgspec.json.decode(raw)["type"] == tag
    assert decode_body(tag, SCHEMA_VERSION, raw) == event
    fields = {
        b"type": tag.encode(),
        b"v": str(SCHEMA_VERSION).encode(),
        b"id": b"e-1",
        b"at": b"5",
        b"vm": b"",
        b"actor": b"t",
        b"data": raw,
    }
    assert decode_entry("p", b"1-0", fields).event == event


def test_defaults_are_left_out_of_the_body() -> None:
    """Old readers and the Lua scripts see only what differs from the defaults."""
    raw = encode(events.VmCloneRequested(template="t"))
    assert msgspec.json.decode(raw) == {"type": "vm.clone-requested", "template": "t"}


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_body("vm.teleported", SCHEMA_VERSION, b'{"type":"vm.teleported"}')


@pytest.fixture
def upcasters(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, int], Any]:
    """An empty upcaster registry for this test only."""
    registry: dict[tuple[str, int], Any] = {}
    monkeypatch.setattr(codec, "_upcasters", registry)
    return registry


def test_upcaster_turns_an_old_body_into_the_current_event(upcasters: dict[tuple[str, int], Any]) -> None:
    def v0_to_v1(body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        body["seconds"] = body.pop("secs")
        return body

    register_upcaster("vm.cloned", SCHEMA_VERSION - 1, v0_to_v1)
    old = b'{"type":"vm.cloned","secs":4.5,"ip":"10.0.0.1"}'
    assert decode_body("vm.cloned", SCHEMA_VERSION - 1, old) == events.VmCloned(seconds=4.5, ip="10.0.0.1")
    with pytest.raises(msgspec.ValidationError):  # without the upcaster the old body is invalid
        decode_body("vm.cloned", SCHEMA_VERSION, old)


def test_upcasters_chain_in_version_order(upcasters: dict[tuple[str, int], Any]) -> None:
    seen: list[int] = []

    def step(v: int, change: dict[str, Any]) -> Any:
        def up(body: dict[str, Any]) -> dict[str, Any]:
            seen.append(v)
            return {**body, **change}

        return up

    register_upcaster("vm.expired", SCHEMA_VERSION - 2, step(SCHEMA_VERSION - 2, {"reason": "lifetime"}))
    register_upcaster("vm.expired", SCHEMA_VERSION - 1, step(SCHEMA_VERSION - 1, {"reason": "ready_ttl"}))
    register_upcaster("vm.ready", SCHEMA_VERSION - 1, step(99, {}))  # another type: not used
    got = decode_body("vm.expired", SCHEMA_VERSION - 2, b'{"type":"vm.expired","why":"x"}')
    assert got == events.VmExpired(reason="ready_ttl")
    assert seen == [SCHEMA_VERSION - 2, SCHEMA_VERSION - 1]


def test_old_body_without_upcaster_decodes_as_is(upcasters: dict[tuple[str, int], Any]) -> None:
    assert decode_body("vm.returned", 0, b'{"type":"vm.returned"}') == events.VmReturned()


def test_decode_entry_reads_the_whole_envelope() -> None:
    """Exactly the fields ``emit`` in commands/lua/lib.lua writes, as redis-py returns them."""
    fields = {
        b"type": b"vm.checked-out",
        b"v": b"1",
        b"id": b"abc-2",
        b"at": b"1700000000123",
        b"vm": b"brave-otter",
        b"actor": b"api:alice",
        b"corr": b"req-7",
        b"cause": b"abc-1",
        b"data": b'{"type":"vm.checked-out","lifetime":2,"token_user":"alice"}',
    }
    assert decode_entry("debian-12", b"1700000000123-0", fields) == Recorded(
        stream="debian-12",
        position="1700000000123-0",
        event_id="abc-2",
        type="vm.checked-out",
        at=1700000000123,
        vm="brave-otter",
        actor="api:alice",
        correlation_id="req-7",
        causation_id="abc-1",
        version=1,
        event=events.VmCheckedOut(lifetime=2, token_user="alice"),
    )


def test_decode_entry_defaults_missing_optional_fields(upcasters: dict[tuple[str, int], Any]) -> None:
    fields = {b"type": b"pool.reset", b"at": b"7", b"data": b'{"type":"pool.reset"}'}
    r = decode_entry("p", "3-1", fields)
    assert (r.position, r.version, r.vm, r.actor, r.correlation_id, r.causation_id, r.event_id) == (
        "3-1",
        1,
        "",
        "",
        "",
        "",
        "",
    )
    assert r.event == events.PoolReset()


def test_decode_entry_upcasts_by_the_envelope_version(upcasters: dict[tuple[str, int], Any]) -> None:
    register_upcaster("vm.lifetime-changed", 0, lambda b: {"type": b["type"], "hours": b["h"]})
    fields = {
        b"type": b"vm.lifetime-changed",
        b"v": b"0",
        b"at": b"1",
        b"vm": b"x",
        b"data": b'{"type":"vm.lifetime-changed","h":3}',
    }
    r = decode_entry("p", b"1-0", fields)
    assert (r.version, r.event) == (0, events.VmLifetimeChanged(hours=3))
