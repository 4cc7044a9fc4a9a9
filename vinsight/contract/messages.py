"""The records that cross the wire, independent of how they are encoded.

Every record (sample or event) carries the device id, the boot id and a per-boot sequence number.
The agent draws samples and events from one counter per boot, so ``(device_id, boot_id, seq)`` is
unique across everything a device ever sends: the cloud de-duplicates redeliveries on it and
orders a device's records by it even when clocks jump.

A :class:`SampleBatch` is columnar: one list (or numpy array on the server) per signal, with NaN
where a sample has no value for that signal. The device builds batches from :class:`Sample` rows;
ingest works on the columns directly.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .signals import BY_NAME


@dataclass(slots=True)
class Sample:
    """One moment of one vehicle: whatever signals were read at ``ts_ms`` (Unix ms, UTC)."""

    seq: int
    ts_ms: int
    values: dict[str, float]
    extras: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class SampleReject:
    """A sample the decoder or validator refused, kept whole so it can go to dead letters."""

    index: int
    reason: str
    raw: Any
    seq: int | None = None


@dataclass(slots=True)
class SampleBatch:
    device_id: str
    boot_id: uuid.UUID
    seq: Sequence[int]
    ts_ms: Sequence[int]
    columns: dict[str, Sequence[float]]
    extras: dict[str, Sequence[float]] = field(default_factory=dict)
    rejects: list[SampleReject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)

    @classmethod
    def from_samples(cls, device_id: str, boot_id: uuid.UUID, samples: Iterable[Sample]) -> SampleBatch:
        rows = list(samples)
        names: dict[str, None] = {}
        extra_names: dict[str, None] = {}
        for s in rows:
            names.update(dict.fromkeys(s.values))
            extra_names.update(dict.fromkeys(s.extras))
        nan = math.nan
        columns = {n: [float(s.values.get(n, nan)) for s in rows] for n in names if n in BY_NAME}
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise KeyError(f"samples carry signals that are not in the catalog: {sorted(unknown)}")
        extras = {n: [float(s.extras.get(n, nan)) for s in rows] for n in extra_names}
        return cls(device_id, boot_id, [s.seq for s in rows], [s.ts_ms for s in rows], columns, extras)

    def samples(self) -> Iterator[Sample]:
        """Row view of the batch (absent values left out)."""
        for i in range(len(self.seq)):
            values = {n: float(col[i]) for n, col in self.columns.items() if not math.isnan(col[i])}
            extras = {n: float(col[i]) for n, col in self.extras.items() if not math.isnan(col[i])}
            yield Sample(int(self.seq[i]), int(self.ts_ms[i]), values, extras)


class EventKind(enum.StrEnum):
    """What the agent reports as a discrete event, with the ``data`` keys each one must carry."""

    DTC_NEW = "dtc_new"  # data: code, dtc_type (stored/pending/permanent), description
    DTC_CLEARED = "dtc_cleared"  # data: code, dtc_type
    MIL_ON = "mil_on"  # data: dtc_count
    MIL_OFF = "mil_off"  # data: dtc_count
    ENGINE_ON = "engine_on"  # data: reason
    ENGINE_OFF = "engine_off"  # data: reason (rpm_zero / no_ecu_answer / low_voltage)
    LOW_VOLTAGE_CUTOFF = "low_voltage_cutoff"  # data: voltage
    ADAPTER_CONNECTED = "adapter_connected"  # data: port, protocol
    ADAPTER_DISCONNECTED = "adapter_disconnected"  # data: port, error
    VEHICLE_IDENTIFIED = "vehicle_identified"  # data: vin, supported (list of signal names)
    OUTBOX_DROPPED = "outbox_dropped"  # data: samples (count dropped by the disk budget)
    CLOCK_SET = "clock_set"  # data: offset_s (GPS time minus system time when corrected)


class DtcType(enum.StrEnum):
    STORED = "stored"  # mode 03, confirmed
    PENDING = "pending"  # mode 07
    PERMANENT = "permanent"  # mode 0A


EVENT_REQUIRED_DATA: Mapping[EventKind, tuple[str, ...]] = {
    EventKind.DTC_NEW: ("code", "dtc_type"),
    EventKind.DTC_CLEARED: ("code", "dtc_type"),
    EventKind.MIL_ON: ("dtc_count",),
    EventKind.MIL_OFF: ("dtc_count",),
    EventKind.ENGINE_ON: ("reason",),
    EventKind.ENGINE_OFF: ("reason",),
    EventKind.LOW_VOLTAGE_CUTOFF: ("voltage",),
    EventKind.ADAPTER_CONNECTED: ("port",),
    EventKind.ADAPTER_DISCONNECTED: ("port",),
    EventKind.VEHICLE_IDENTIFIED: ("vin",),
    EventKind.OUTBOX_DROPPED: ("samples",),
    EventKind.CLOCK_SET: ("offset_s",),
}


@dataclass(slots=True)
class Event:
    seq: int
    ts_ms: int
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EventBatch:
    device_id: str
    boot_id: uuid.UUID
    events: list[Event]
    rejects: list[SampleReject] = field(default_factory=list)


class ConnectionState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(slots=True)
class DeviceState:
    """Retained on ``status/<id>/state``; the last will publishes the OFFLINE form."""

    state: ConnectionState
    ts_ms: int
    boot_id: uuid.UUID | None = None
    agent_version: str = ""
    config_version: int = 0


@dataclass(slots=True)
class DeviceHealth:
    """Published periodically on ``status/<id>/health``.

    ``adapter`` holds the OBD link (state, port, protocol, measured request latency);
    ``rates_hz`` the achieved read rate per signal; ``outbox`` depth, bytes and drop counters;
    ``power`` engine and parking state with the last battery voltage.
    """

    ts_ms: int
    boot_id: uuid.UUID
    adapter: dict[str, Any] = field(default_factory=dict)
    rates_hz: dict[str, float] = field(default_factory=dict)
    outbox: dict[str, Any] = field(default_factory=dict)
    power: dict[str, Any] = field(default_factory=dict)
    gps: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SignalPlan:
    rate_hz: float  # 0 disables the signal
    priority: int = 5  # 1 (first) .. 9 (last)


@dataclass(slots=True)
class AgentConfig:
    """Remote configuration, sent retained on ``cmd/<id>/config`` and acknowledged on
    ``status/<id>/config``. ``version`` increases monotonically; the agent ignores older ones."""

    version: int
    signals: dict[str, SignalPlan] = field(default_factory=dict)
    batch_max_samples: int | None = None
    batch_max_age_s: float | None = None
    heartbeat_interval_s: float | None = None
    low_voltage_cutoff_v: float | None = None


@dataclass(slots=True)
class ConfigAck:
    version: int
    status: str  # "applied" or "rejected"
    errors: list[str] = field(default_factory=list)
    ts_ms: int = 0
