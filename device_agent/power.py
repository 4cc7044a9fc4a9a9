"""Battery safety: stop talking to the ECU when the engine is off.

Polling the ECU keeps the car's modules awake and drains the 12 V battery (the most common complaint
about OBD dongles), so the agent decides when the engine is off and then leaves the ECU alone:

* RUNNING -> PARKED when RPM reads 0, or the ECU stops answering, for ``engine_off_after_s``; or the
  battery falls below the cut-off.
* PARKED: only the adapter's own voltage reading (ELM327 ``ATRV``, which never wakes the car's bus)
  every ``heartbeat_interval_s``. A voltage at or above ``wake_voltage_v`` (the alternator charges at
  13.2-14.8 V) or a rise of ``wake_voltage_jump_v`` since the last reading (smart alternators and
  hybrids defeat a fixed threshold) triggers one ECU probe; an answer with RPM > 0 means RUNNING.
* CUTOFF: below ``low_voltage_cutoff_v`` while parked nothing but a slow voltage check remains, so the
  dongle never becomes the reason a car does not start.

Pure logic: readings and the clock come in, decisions and events go out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from vinsight.contract import EventKind


class EngineState(enum.StrEnum):
    UNKNOWN = "unknown"
    RUNNING = "running"
    PARKED = "parked"
    CUTOFF = "cutoff"


@dataclass
class PowerPolicy:
    engine_off_after_s: float = 10.0
    heartbeat_interval_s: float = 300.0
    low_voltage_cutoff_v: float = 11.8
    wake_voltage_v: float = 13.2
    wake_voltage_jump_v: float = 0.2
    cutoff_check_factor: float = 4.0  # in CUTOFF the voltage is checked this many times less often

    state: EngineState = EngineState.UNKNOWN
    last_voltage: float | None = None
    parked_since: float | None = None
    _quiet_since: float | None = None  # first moment of rpm 0 / no answer while running
    _next_voltage_check: float = 0.0
    _probe_wanted: bool = True

    # --- what the poller may do -----------------------------------------------------------------

    def may_poll_ecu(self) -> bool:
        return self.state in (EngineState.RUNNING, EngineState.UNKNOWN)

    def wants_probe(self) -> bool:
        """One ECU request is allowed to find out whether the engine started."""
        return self._probe_wanted and self.state is not EngineState.RUNNING

    def voltage_due(self, now: float) -> bool:
        return self.state in (EngineState.PARKED, EngineState.CUTOFF) and now >= self._next_voltage_check

    # --- readings ------------------------------------------------------------------------------------------

    def on_rpm(self, rpm: float | None, now: float) -> list[tuple[EventKind, dict[str, Any]]]:
        """An RPM reading (None: the ECU did not answer)."""
        events: list[tuple[EventKind, dict[str, Any]]] = []
        self._probe_wanted = False
        running = rpm is not None and rpm > 0
        if running:
            self._quiet_since = None
            if self.state is not EngineState.RUNNING:
                self.state = EngineState.RUNNING
                self.parked_since = None
                events.append((EventKind.ENGINE_ON, {"reason": "rpm", "rpm": rpm}))
            return events
        if self.state in (EngineState.RUNNING, EngineState.UNKNOWN):
            if self._quiet_since is None:
                self._quiet_since = now
            elif now - self._quiet_since >= self.engine_off_after_s:
                return self._park(now, "rpm_zero" if rpm is not None else "no_ecu_answer", events)
        return events

    def on_voltage(self, volts: float | None, now: float) -> list[tuple[EventKind, dict[str, Any]]]:
        events: list[tuple[EventKind, dict[str, Any]]] = []
        previous, self.last_voltage = self.last_voltage, volts
        if volts is None:
            return events
        if self.state is EngineState.RUNNING:
            return events
        if self.state is EngineState.UNKNOWN:
            self._probe_wanted = True
            return events
        self._next_voltage_check = now + self.heartbeat_interval_s * (
            self.cutoff_check_factor if self.state is EngineState.CUTOFF else 1.0)
        if volts >= self.wake_voltage_v or (previous is not None and volts - previous >= self.wake_voltage_jump_v):
            self._probe_wanted = True
            return events
        if volts < self.low_voltage_cutoff_v and self.state is EngineState.PARKED:
            self.state = EngineState.CUTOFF
            self._next_voltage_check = now + self.heartbeat_interval_s * self.cutoff_check_factor
            events.append((EventKind.LOW_VOLTAGE_CUTOFF, {"voltage": volts}))
        elif volts >= self.low_voltage_cutoff_v and self.state is EngineState.CUTOFF:
            self.state = EngineState.PARKED
        return events

    def _park(self, now: float, reason: str, events: list) -> list:
        self.state = EngineState.PARKED
        self.parked_since = now
        self._quiet_since = None
        self._next_voltage_check = now + self.heartbeat_interval_s
        events.append((EventKind.ENGINE_OFF, {"reason": reason}))
        return events

    def status(self) -> dict[str, Any]:
        return {"engine": self.state.value, "battery_voltage": self.last_voltage, "parked_since": self.parked_since,
                "low_voltage_cutoff_v": self.low_voltage_cutoff_v, "heartbeat_interval_s": self.heartbeat_interval_s}
