"""What happens to one MQTT message, stage by stage, in one visible place.

:func:`process_delivery` chains small stages, each with one concern, in the order a message meets
them (the way a Traccar pipeline chains its handlers):

1. :func:`parse_topic`            - the topic names a known tree, a valid device id and a kind
2. :func:`decode_payload`         - the contract's decoder for that kind and MQTT v5 content type
3. :func:`check_device_identity`  - the device id inside the payload is the one in the topic
4. :func:`split_invalid_samples`  - physically impossible values and absurd timestamps, per sample
5. :func:`sample_intervals`       - how long each sample stands for, for the rollups
6. :func:`split_invalid_events`   - the same for events

A stage that refuses the whole message raises :class:`Rejected`; the message then becomes one dead
letter with the reason and the payload as received. A sample or event refused on its own becomes a
dead letter alone and its valid neighbours go on. Nothing here touches the database or the network:
the result is an :class:`Outcome` that :mod:`ingest.store` writes.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vinsight.contract import codec, topics
from vinsight.contract.errors import DecodeReason, WireDecodeError
from vinsight.contract.messages import EventBatch, SampleBatch
from vinsight.contract.signals import SIGNALS
from vinsight.contract.validation import TimeWindow, sample_problems

from .fast_decode import SIGNAL_NAMES, decode_samples_fast, invalid_rows_kernel, sample_intervals_kernel

SIGNAL_INDEX: dict[str, int] = {name: j for j, name in enumerate(SIGNAL_NAMES)}
SIGNAL_MIN = np.array([sig.minimum for sig in SIGNALS])
SIGNAL_MAX = np.array([sig.maximum for sig in SIGNALS])


class IngestReason:
    """Reasons ingest adds to the decoder's :class:`DecodeReason` codes (all stored as text)."""

    BAD_TOPIC = "bad_topic"
    DEVICE_MISMATCH = "device_mismatch"
    INVALID_SAMPLE = "invalid_sample"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Delivery:
    """One MQTT message as received. ``mid``/``generation`` identify it for the acknowledgement."""

    topic: str
    payload: bytes
    content_type: str | None
    received_ms: int
    sent_ms: int | None = None
    mid: int = 0
    qos: int = 1
    generation: int = 0


@dataclass(slots=True)
class DeadLetter:
    topic: str
    device_id: str | None
    content_type: str | None
    reason: str
    detail: str
    payload: bytes | None = None
    sample_index: int | None = None
    sample: Any = None


@dataclass(slots=True)
class SampleRows:
    """The valid samples of one batch, ready for COPY.

    ``values`` is one (samples x catalog signals) float64 matrix in catalog order, NaN where a
    sample lacks a signal: a flush of hundreds of batches then concatenates in one call and every
    column of the COPY is a slice, instead of a dictionary walk per batch and signal.
    """

    device_id: str
    boot_id: uuid.UUID
    seq: np.ndarray  # int64
    ts_ms: np.ndarray  # int64
    interval_ms: np.ndarray  # int64; -1 where unknown
    values: np.ndarray  # float64 (n, len(SIGNALS)); NaN = absent
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The signals this batch carries, by name (views into ``values``)."""
        present = ~np.isnan(self.values).all(axis=0)
        return {SIGNAL_NAMES[j]: self.values[:, j] for j in np.flatnonzero(present)}


@dataclass(slots=True)
class StatusUpdate:
    device_id: str
    kind: str  # state / health / config
    fields: dict[str, Any]


@dataclass(slots=True)
class Outcome:
    device_id: str | None = None
    samples: SampleRows | None = None
    events: EventBatch | None = None
    status: StatusUpdate | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    window: TimeWindow = field(default_factory=TimeWindow)
    max_interval_ms: int = 5_000
    dead_letter_payload_max: int = 1 << 20


# --- the chain -----------------------------------------------------------------------------------


def process_delivery(d: Delivery, now_ms: int, config: PipelineConfig = PipelineConfig()) -> Outcome:
    """Run one message through every stage; never raises for anything the message contains."""
    out = Outcome()
    try:
        parsed = parse_topic(d)
        out.device_id = parsed.device_id
        decoded = decode_payload(d, parsed)
        check_device_identity(parsed, decoded)
        if isinstance(decoded, DecodedSamples):
            rows, rejects = split_invalid_samples(decoded.batch, now_ms, config.window, decoded.values)
            if rows is not None:
                rows.interval_ms = sample_intervals(rows.ts_ms, config.max_interval_ms)
            out.samples = rows
            out.dead_letters.extend(_sample_dead_letter(d, parsed.device_id, r) for r in rejects)
        elif isinstance(decoded, EventBatch):
            events, rejects = split_invalid_events(decoded, now_ms, config.window)
            out.events = events
            out.dead_letters.extend(_sample_dead_letter(d, parsed.device_id, r) for r in rejects)
        else:
            out.status = decoded
    except Rejected as exc:
        out.samples = out.events = out.status = None
        out.dead_letters = [DeadLetter(
            clean_text(d.topic), out.device_id, clean_text(d.content_type), exc.reason, clean_text(exc.detail),
            d.payload[: config.dead_letter_payload_max],
        )]
    return out


# --- the stages ----------------------------------------------------------------------------------


def parse_topic(d: Delivery) -> topics.ParsedTopic:
    try:
        parsed = topics.parse(d.topic)
    except topics.TopicError as exc:
        raise Rejected(IngestReason.BAD_TOPIC, str(exc)) from None
    if parsed.tree == topics.CMD:
        raise Rejected(IngestReason.BAD_TOPIC, "command topics are not data")
    return parsed


@dataclass(slots=True)
class DecodedSamples:
    batch: SampleBatch
    values: np.ndarray | None  # the (samples x signals) matrix when the compiled decoder made it

    @property
    def device_id(self) -> str:
        return self.batch.device_id


def decode_payload(d: Delivery, parsed: topics.ParsedTopic) -> DecodedSamples | EventBatch | StatusUpdate:
    """The contract's decoder for the topic's kind. Any decoder failure is a whole-message reject.

    Binary sample batches take the compiled decoder (:mod:`ingest.fast_decode`), which defers to the
    contract's own decoder for anything it does not take."""
    try:
        if parsed.kind == topics.SAMPLES:
            if d.content_type == codec.CT_SAMPLES_BINARY:
                return DecodedSamples(*decode_samples_fast(d.payload))
            return DecodedSamples(codec.decode_samples(d.payload, d.content_type), None)
        if parsed.kind == topics.EVENTS:
            _expect_content_type(d, codec.CT_EVENTS_JSON)
            return codec.decode_events(d.payload)
        if parsed.kind == topics.STATE:
            _expect_content_type(d, codec.CT_STATUS_JSON)
            state = codec.decode_state(d.payload)
            return StatusUpdate(parsed.device_id, "state", {
                "state": state.state.value, "ts_ms": state.ts_ms, "boot_id": state.boot_id,
                "agent_version": state.agent_version, "config_version": state.config_version,
            })
        if parsed.kind == topics.HEALTH:
            _expect_content_type(d, codec.CT_STATUS_JSON)
            health = codec.decode_health(d.payload)
            return StatusUpdate(parsed.device_id, "health", {
                "ts_ms": health.ts_ms, "boot_id": health.boot_id,
                "health": jsonable({"adapter": health.adapter, "rates_hz": health.rates_hz, "outbox": health.outbox,
                                    "power": health.power, "gps": health.gps}),
            })
        _expect_content_type(d, codec.CT_CONFIG_JSON)
        ack = codec.decode_config_ack(d.payload)
        return StatusUpdate(parsed.device_id, "config", {
            "ts_ms": ack.ts_ms, "config_version": ack.version if ack.status == "applied" else None,
        })
    except WireDecodeError as exc:
        raise Rejected(exc.reason.value, exc.detail) from None
    except Exception as exc:  # a decoder bug must cost one message, never the worker
        raise Rejected(DecodeReason.SCHEMA.value, f"undecodable ({type(exc).__name__}: {exc})") from None


def _expect_content_type(d: Delivery, expected: str) -> None:
    if d.content_type not in (None, expected):
        raise Rejected(DecodeReason.CONTENT_TYPE.value, f"{str(d.content_type)[:100]!r} is not {expected}")


def check_device_identity(parsed: topics.ParsedTopic, decoded: object) -> None:
    """A device may only speak for itself: the broker's ACL pins the topic, this pins the payload."""
    claimed = getattr(decoded, "device_id", parsed.device_id)
    if claimed != parsed.device_id:
        raise Rejected(IngestReason.DEVICE_MISMATCH,
                       f"payload says device {str(claimed)[:80]!r}, topic says {parsed.device_id!r}")


def split_invalid_samples(batch: SampleBatch, now_ms: int, window: TimeWindow,
                          values: np.ndarray | None = None) -> tuple[SampleRows | None, list[Any]]:
    """Valid samples as a matrix; each invalid one as (index, reason, detail, sample) for dead letters.

    Same rules as :func:`vinsight.contract.validation.sample_problems` (range per signal, time
    window), evaluated for the whole batch at once; the wording of a refusal comes from that function.
    """
    rejects: list[Any] = [
        (r.index, DecodeReason.SCHEMA.value if ":" not in r.reason else r.reason.split(":", 1)[0],
         r.reason, r.raw) for r in batch.rejects
    ]
    n = len(batch)
    if n == 0:
        return None, rejects
    seq = np.asarray(batch.seq, dtype=np.int64)
    ts = np.asarray(batch.ts_ms, dtype=np.int64)
    if values is None:
        values = np.full((n, len(SIGNAL_NAMES)), np.nan)
        if batch.columns:
            idx = [SIGNAL_INDEX[name] for name in batch.columns]
            values[:, idx] = np.vstack([np.asarray(c, dtype=np.float64) for c in batch.columns.values()]).T
    extras = {k: np.asarray(v, dtype=np.float64) for k, v in batch.extras.items()}
    bad = invalid_rows_kernel(values, ts, SIGNAL_MIN, SIGNAL_MAX, now_ms - window.max_past_ms,
                              now_ms + window.max_future_ms)
    for col in extras.values():  # extras have no catalog range, but must be finite numbers
        bad |= np.isinf(col)
    if bad.any():
        for i in np.flatnonzero(bad):
            problems = sample_problems(batch, int(i), now_ms, window) or ["non-finite extra value"]
            sample = {"seq": int(seq[i]), "ts": int(ts[i]),
                      "values": {SIGNAL_NAMES[j]: float(values[i, j]) for j in np.flatnonzero(~np.isnan(values[i]))},
                      "extras": {k: float(c[i]) for k, c in extras.items() if not math.isnan(c[i])}}
            rejects.append((int(i), IngestReason.INVALID_SAMPLE, "; ".join(problems), sample))
        keep = ~bad
        if not keep.any():
            return None, rejects
        seq, ts, values = seq[keep], ts[keep], values[keep]
        extras = {k: v[keep] for k, v in extras.items()}
    intervals = np.full(len(seq), -1, np.int64)
    return SampleRows(batch.device_id, batch.boot_id, seq, ts, intervals, values, extras), rejects


def sample_intervals(ts_ms: np.ndarray, max_interval_ms: int) -> np.ndarray:
    """How long each sample stands for: the gap to the next sample of its batch (in time order).

    The last sample gets the batch's median gap. Gaps longer than ``max_interval_ms`` (a data gap, a
    parked car) get -1, stored as NULL, so rollups never integrate speed across them. (Compiled;
    :func:`ingest.fast_decode.sample_intervals_reference` is the plain-Python statement.)
    """
    return sample_intervals_kernel(np.ascontiguousarray(ts_ms, dtype=np.int64), max_interval_ms)


def split_invalid_events(batch: EventBatch, now_ms: int, window: TimeWindow) -> tuple[EventBatch, list[Any]]:
    rejects: list[Any] = [(r.index, IngestReason.INVALID_EVENT, r.reason, r.raw) for r in batch.rejects]
    kept = []
    for i, e in enumerate(batch.events):
        if e.ts_ms < now_ms - window.max_past_ms or e.ts_ms > now_ms + window.max_future_ms:
            rejects.append((i, IngestReason.INVALID_EVENT, f"timestamp {e.ts_ms} outside the accepted window",
                            {"seq": e.seq, "ts": e.ts_ms, "kind": e.kind.value, "data": e.data}))
        else:
            kept.append(e)
    return EventBatch(batch.device_id, batch.boot_id, kept), rejects


# --- helpers -------------------------------------------------------------------------------------


def _sample_dead_letter(d: Delivery, device_id: str, reject: Any) -> DeadLetter:
    index, reason, detail, sample = reject
    return DeadLetter(clean_text(d.topic), device_id, clean_text(d.content_type), reason, clean_text(detail),
                      None, index, jsonable(sample))


def clean_text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; hostile input may. Escape it rather than fail the write."""
    return None if value is None else str(value).replace("\x00", "\\x00")


def jsonable(value: Any, depth: int = 0) -> Any:
    """Make anything a device sent storable as jsonb: non-finite floats and odd types become text."""
    if depth > 20:
        return "<nested too deep>"
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 1 << 63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {str(clean_text(str(k))): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return clean_text(repr(value)[:1000])
