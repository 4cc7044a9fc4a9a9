"""The recorder: turns readings into samples, numbers everything, and hands it to the outbox.

Sources deliver single readings whenever they get them (the OBD scheduler at each signal's own rate,
GPS once a second). The recorder assembles them into one :class:`Sample` per sample interval: a
reading goes into the interval its timestamp falls in, and only freshly read values appear, so a
signal polled every 5 s shows up in every fifth sample instead of being repeated (achieved rates stay
honest, and the wire stays small). If a signal is read twice in one interval the later value wins.

Every sample and event gets its sequence number from one per-boot counter, here and nowhere else,
so ``(device_id, boot_id, seq)`` is unique across everything the device sends.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from typing import Any

from vinsight.contract import Event, EventKind, Sample
from vinsight.contract.signals import BY_NAME

from .outbox import Outbox

log = logging.getLogger(__name__)


class Recorder:
    """Implements :class:`device_agent.sink.ReadingSink`."""

    def __init__(self, outbox: Outbox, boot_id: uuid.UUID, clock_ms: Callable[[], int],
                 interval_s: float = 1.0, late_grace_s: float = 0.3) -> None:
        self.outbox = outbox
        self.boot_id = boot_id
        self.clock_ms = clock_ms
        self.interval_ms = max(1, int(interval_s * 1000))
        self.late_grace_ms = int(late_grace_s * 1000)
        self._lock = threading.Lock()
        self._seq = 0
        self._bucket: int | None = None
        self._last_closed: int = -1
        self._values: dict[str, float] = {}
        self._extras: dict[str, float] = {}
        self.samples_recorded = 0
        self.events_recorded = 0
        self.readings_rejected = 0
        self.listeners: list[Callable[[Sample | Event], None]] = []

    # --- ReadingSink -------------------------------------------------------------------------------

    def reading(self, name: str, value: float, ts_ms: int) -> None:
        sig = BY_NAME.get(name)
        if sig is None or value is None or not math.isfinite(value):
            self.readings_rejected += 1
            log.debug("dropping reading %s=%r", name, value)
            return
        with self._lock:
            self._place(ts_ms)
            self._values[name] = float(value)

    def extra(self, name: str, value: float, ts_ms: int) -> None:
        if name in BY_NAME or not math.isfinite(value):
            self.readings_rejected += 1
            return
        with self._lock:
            self._place(ts_ms)
            self._extras[name] = float(value)

    def event(self, kind: EventKind, data: dict[str, Any], ts_ms: int | None = None) -> None:
        with self._lock:
            event = Event(self._next_seq(), self.clock_ms() if ts_ms is None else ts_ms, EventKind(kind), data)
            dropped = self.outbox.add_event(self.boot_id, event)
            self.events_recorded += 1
        self._notify(event)
        if dropped:
            self._report_drop(dropped)

    # --- interval handling ------------------------------------------------------------------------------

    def _place(self, ts_ms: int) -> None:
        # A reading whose interval is already closed (a straggler past the grace period) joins the
        # next one: numbered samples are immutable, and one interval never yields two samples.
        bucket = max(ts_ms // self.interval_ms, self._last_closed + 1)
        if self._bucket is None:
            self._bucket = bucket
        elif bucket > self._bucket:
            self._close_locked()
            self._bucket = bucket
        # A reading older than the open interval joins the open one, for the same reason.

    def flush_due(self, now_ms: int | None = None) -> None:
        """Close the open interval once it has ended (plus a grace for stragglers)."""
        now = self.clock_ms() if now_ms is None else now_ms
        with self._lock:
            if self._bucket is not None and now >= (self._bucket + 1) * self.interval_ms + self.late_grace_ms:
                self._close_locked()
                self._bucket = None

    def flush(self) -> None:
        """Close the open interval now (shutdown, end of a replay)."""
        with self._lock:
            self._close_locked()
            self._bucket = None

    def _close_locked(self) -> None:
        if self._bucket is not None:
            self._last_closed = max(self._last_closed, self._bucket)
        if self._bucket is None or (not self._values and not self._extras):
            self._values, self._extras = {}, {}
            return
        sample = Sample(self._next_seq(), self._bucket * self.interval_ms, self._values, self._extras)
        self._values, self._extras = {}, {}
        dropped = self.outbox.add_sample(self.boot_id, sample)
        self.samples_recorded += 1
        self._notify(sample)
        if dropped:
            # Reported outside the lock would be nicer, but the event must be numbered in order.
            event = Event(self._next_seq(), self.clock_ms(), EventKind.OUTBOX_DROPPED,
                          {"samples": dropped, "dropped_total": self.outbox.dropped_total})
            self.outbox.add_event(self.boot_id, event)
            self.events_recorded += 1

    def _report_drop(self, dropped: int) -> None:
        self.event(EventKind.OUTBOX_DROPPED, {"samples": dropped, "dropped_total": self.outbox.dropped_total})

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _notify(self, record: Sample | Event) -> None:
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:  # a listener must never break recording
                log.exception("recorder listener failed")

    def status(self) -> dict[str, Any]:
        return {"samples": self.samples_recorded, "events": self.events_recorded, "next_seq": self._seq,
                "rejected_readings": self.readings_rejected}
