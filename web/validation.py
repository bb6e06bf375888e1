"""Validation of API input, answering with vmpooler v3's exact messages. Pure: no I/O, no Litestar.

Every validator returns either its value or a failure value, and never raises on bad input:

* :class:`ValidationFailure` — one message; the route answers ``failure.status`` with
  ``failure.body()``, i.e. ``{"ok": false, "error": <message>}`` or, for the ondemand and
  config endpoints (:func:`parse_json_payload`), ``{"ok": false, "message": <message>}``.
* :class:`VmUpdateRejected` — ``PUT /vm/<hostname>``'s collected failures; the route answers
  ``status`` with ``body()``, i.e. ``{"ok": false, "failure": [...]}``.

Routes that prefer exceptions call :func:`unwrap`, which raises :class:`ValidationError`
(carrying the failure) for one exception handler to render.
"""

from __future__ import annotations

from web._validation_checkout import MAX_CHECKOUT_VMS, checkout_request_from_body, checkout_request_from_path
from web._validation_failure import ValidationError, ValidationFailure, VmUpdateRejected, unwrap
from web._validation_fields import (
    MAX_HOSTNAME_LENGTH,
    MAX_POOL_NAME_LENGTH,
    shorten_hostname,
    validate_count,
    validate_disk_size,
    validate_hostname,
    validate_pool_name,
)
from web._validation_json import MAX_BODY_BYTES, MAX_BODY_DEPTH, parse_json_body, parse_json_payload
from web._validation_update import (
    MAX_LIFETIME_HOURS,
    MAX_TAG_KEY_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    VmUpdate,
    apply_tagfilter,
    parse_vm_update,
    validate_lifetime_update,
    validate_tags,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_BODY_DEPTH",
    "MAX_CHECKOUT_VMS",
    "MAX_HOSTNAME_LENGTH",
    "MAX_LIFETIME_HOURS",
    "MAX_POOL_NAME_LENGTH",
    "MAX_TAG_KEY_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "ValidationError",
    "ValidationFailure",
    "VmUpdate",
    "VmUpdateRejected",
    "apply_tagfilter",
    "checkout_request_from_body",
    "checkout_request_from_path",
    "parse_json_body",
    "parse_json_payload",
    "parse_vm_update",
    "shorten_hostname",
    "unwrap",
    "validate_count",
    "validate_disk_size",
    "validate_hostname",
    "validate_lifetime_update",
    "validate_pool_name",
    "validate_tags",
]
