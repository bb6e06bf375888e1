"""Stream entries: the fixed envelope, the body codec (built once) and the upcaster hook."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ._base import Event
from .control import ControlEvent
from .ondemand import OndemandEvent
from .pool import PoolEvent
from .vm import VmEvent

__all__ = [
    "SCHEMA_VERSION",
    "AnyEvent",
    "Recorded",
    "decode_body",
    "decode_entry",
    "encode",
    "register_upcaster",
]

AnyEvent = VmEvent | PoolEvent | ControlEvent | OndemandEvent

SCHEMA_VERSION = 1
"""Envelope ``v`` written with every new entry; older entries are upcast on decode."""

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_upcasters: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(event_type: str, from_version: int, fn: Upcaster) -> None:
    """Register ``fn`` to turn a ``from_version`` body of ``event_type`` into the next version's."""
    _upcasters[(event_type, from_version)] = fn


def encode(event: Event) -> bytes:
    """Encode an event body (with its ``type`` tag) as compact JSON."""
    return _encoder.encode(event)


def decode_body(event_type: str, version: int, data: bytes) -> AnyEvent:
    """Decode a body written at schema ``version``, upcasting it first if it is older."""
    if version == SCHEMA_VERSION:
        return _decoder.decode(data)
    body: dict[str, Any] = msgspec.json.decode(data)
    for v in range(version, SCHEMA_VERSION):
        step = _upcasters.get((event_type, v))
        if step is not None:
            body = step(body)
    event: AnyEvent = msgspec.convert(body, AnyEvent)
    return event


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """One decoded log entry: the envelope plus its event.

    Attributes:
        stream: the pool name, or ``"ctl"`` for the control stream.
        position: the Redis stream entry id (``<ms>-<seq>``), the event's place in its stream.
        event_id: globally unique id of the event.
        type: the event's tag.
        at: event time in milliseconds since the epoch (from the injected clock).
        vm: the VM the event is about; empty for pool and control events.
        actor: who caused it (``api:<user>``, ``manager``, ``worker:<id>``, ...).
        correlation_id: the request or flow the event belongs to.
        causation_id: the event or request that directly caused this one.
        version: schema version the body was written with.
        event: the decoded body.
    """

    stream: str
    position: str
    event_id: str
    type: str
    at: int
    vm: str
    actor: str
    correlation_id: str
    causation_id: str
    version: int
    event: AnyEvent


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    value = fields.get(name, b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_entry(stream: str, position: bytes | str, fields: Mapping[bytes, bytes]) -> Recorded:
    """Decode one raw stream entry (as redis-py returns it with bytes replies)."""
    event_type = _text(fields, b"type")
    version = int(fields.get(b"v", b"1"))
    return Recorded(
        stream=stream,
        position=position.decode() if isinstance(position, bytes) else position,
        event_id=_text(fields, b"id"),
        type=event_type,
        at=int(fields[b"at"]),
        vm=_text(fields, b"vm"),
        actor=_text(fields, b"actor"),
        correlation_id=_text(fields, b"corr"),
        causation_id=_text(fields, b"cause"),
        version=version,
        event=decode_body(event_type, version, fields[b"data"]),
    )
