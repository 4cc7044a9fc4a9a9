"""Typed errors of the wire contract.

Decoding untrusted bytes never raises anything but :class:`WireDecodeError`, whose ``reason`` is a
stable machine-readable code (stored with dead letters and counted in metrics) and whose ``detail``
says in words what was wrong.
"""

from __future__ import annotations

import enum


class DecodeReason(enum.StrEnum):
    CONTENT_TYPE = "content_type"  # unknown or missing MQTT v5 content type
    TOO_LARGE = "too_large"  # payload, decompressed body or sample count over the limit
    TOO_SHORT = "too_short"
    BAD_MAGIC = "bad_magic"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_CHECKSUM = "bad_checksum"
    DECOMPRESSION = "decompression"
    TRUNCATED = "truncated"
    BAD_VARINT = "bad_varint"
    TRAILING_BYTES = "trailing_bytes"
    BAD_DEVICE_ID = "bad_device_id"
    EMPTY_BATCH = "empty_batch"
    BAD_SEQUENCE = "bad_sequence"
    UNKNOWN_SIGNAL = "unknown_signal"
    DUPLICATE_SIGNAL = "duplicate_signal"
    BAD_TEXT = "bad_text"
    BAD_JSON = "bad_json"
    SCHEMA = "schema"  # JSON that parses but does not have the contract's shape


class WireDecodeError(ValueError):
    """A message that cannot be decoded as a whole."""

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class WireEncodeError(ValueError):
    """The device tried to encode something the contract cannot carry (e.g. an infinite value)."""
