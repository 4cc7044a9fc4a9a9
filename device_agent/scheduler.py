"""The PID scheduler: which signals to ask the car for next, within what the adapter can answer.

Every signal has a target rate and a priority (the catalog's defaults, overridden by remote
configuration). An ELM327 answers one request at a time, 5-20 requests a second on real adapters,
so the scheduler measures the real cost of a read (an exponentially weighted average of observed
request latency divided by the PIDs each request carried) and fits the plan into that budget:

1. every enabled signal first gets a floor rate (``floor_hz``, default one read a minute, never more
   than its target), so nothing with a rate above zero starves completely;
2. then priorities are served in order (1 first): a tier that fits gets its full targets; the first
   tier that does not fit shares what is left in proportion to its targets; lower tiers keep their
   floors.

It re-plans when the measured cost moves by more than ``replan_threshold`` (a slow clone adapter,
a busier bus, a Bluetooth link) or when the plan changes. Selection is earliest-deadline-first with
priority breaking ties, and achieved rates over a sliding window are reported in health messages.
Pure logic: the clock is passed in, nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from vinsight.contract import SignalPlan


@dataclass(slots=True)
class _Slot:
    name: str
    target_hz: float
    priority: int
    planned_hz: float = 0.0
    next_due: float = 0.0
    reads: deque[float] = field(default_factory=deque)


class PidScheduler:
    def __init__(self, plans: dict[str, SignalPlan], *, utilisation: float = 0.9, floor_hz: float = 1 / 60,
                 initial_read_cost_s: float = 0.1, ewma_alpha: float = 0.2, replan_threshold: float = 0.2,
                 rate_window_s: float = 30.0) -> None:
        self.utilisation = utilisation
        self.floor_hz = floor_hz
        self.ewma_alpha = ewma_alpha
        self.replan_threshold = replan_threshold
        self.rate_window_s = rate_window_s
        self.read_cost_s = initial_read_cost_s  # seconds of adapter time per PID read
        self._planned_cost_s = initial_read_cost_s
        self.replans = 0
        self._slots: dict[str, _Slot] = {}
        self.set_plans(plans)

    # --- the plan ----------------------------------------------------------------------------------

    def set_plans(self, plans: dict[str, SignalPlan], now: float = 0.0) -> None:
        slots: dict[str, _Slot] = {}
        for name, plan in plans.items():
            if plan.rate_hz <= 0:
                continue  # disabled
            old = self._slots.get(name)
            slot = _Slot(name, plan.rate_hz, plan.priority, next_due=old.next_due if old else now)
            if old:
                slot.reads = old.reads
            slots[name] = slot
        self._slots = slots
        self.replan()

    @property
    def capacity_hz(self) -> float:
        """Reads per second the adapter can sustain at the measured cost."""
        return self.utilisation / self.read_cost_s

    @property
    def planned_capacity_hz(self) -> float:
        """The capacity the current plan was made for (re-planning has hysteresis)."""
        return self.utilisation / self._planned_cost_s

    def replan(self) -> None:
        self._planned_cost_s = self.read_cost_s
        self.replans += 1
        budget = self.capacity_hz
        slots = list(self._slots.values())
        for s in slots:
            s.planned_hz = min(s.target_hz, self.floor_hz)
        budget -= sum(s.planned_hz for s in slots)
        if budget <= 0:
            # Not even the floors fit: share the capacity in proportion to the floors.
            total = sum(s.planned_hz for s in slots) or 1.0
            for s in slots:
                s.planned_hz *= self.capacity_hz / total
            return
        for priority in sorted({s.priority for s in slots}):
            tier = [s for s in slots if s.priority == priority]
            want = sum(s.target_hz - s.planned_hz for s in tier)
            if want <= budget:
                for s in tier:
                    s.planned_hz = s.target_hz
                budget -= want
                continue
            share = budget / want if want > 0 else 0.0
            for s in tier:
                s.planned_hz += (s.target_hz - s.planned_hz) * share
            break

    def observe(self, latency_s: float, pids: int) -> None:
        """Feed one request's round trip and the number of PIDs it carried."""
        if pids <= 0 or not math.isfinite(latency_s) or latency_s <= 0:
            return
        cost = latency_s / pids
        self.read_cost_s = (1 - self.ewma_alpha) * self.read_cost_s + self.ewma_alpha * cost
        if abs(self.read_cost_s - self._planned_cost_s) > self.replan_threshold * self._planned_cost_s:
            self.replan()

    # --- choosing and recording --------------------------------------------------------------------------

    def due(self, now: float, limit: int | None = None) -> list[str]:
        """Signals due now, most urgent first (earliest deadline, then priority)."""
        ready = [s for s in self._slots.values() if s.planned_hz > 0 and s.next_due <= now]
        ready.sort(key=lambda s: (s.next_due, s.priority))
        return [s.name for s in ready[:limit]]

    def next_due(self) -> float:
        return min((s.next_due for s in self._slots.values() if s.planned_hz > 0), default=math.inf)

    def mark_read(self, name: str, now: float) -> None:
        """A read of ``name`` was attempted at ``now`` (answered or not: both cost adapter time)."""
        slot = self._slots.get(name)
        if slot is None:
            return
        period = 1.0 / slot.planned_hz
        # Keep the cadence, but never schedule into the past after a stall (no burst of catch-up reads).
        slot.next_due = max(slot.next_due + period, now + 0.5 * period)

    def record_value(self, name: str, now: float) -> None:
        """A value of ``name`` was actually obtained (for the achieved-rate report)."""
        slot = self._slots.get(name)
        if slot is not None:
            slot.reads.append(now)

    def achieved_hz(self, now: float) -> dict[str, float]:
        horizon = now - self.rate_window_s
        out: dict[str, float] = {}
        for s in self._slots.values():
            while s.reads and s.reads[0] < horizon:
                s.reads.popleft()
            out[s.name] = round(len(s.reads) / self.rate_window_s, 3)
        return out

    def planned_hz(self) -> dict[str, float]:
        return {s.name: s.planned_hz for s in self._slots.values()}

    def targets(self) -> dict[str, SignalPlan]:
        return {s.name: SignalPlan(s.target_hz, s.priority) for s in self._slots.values()}
