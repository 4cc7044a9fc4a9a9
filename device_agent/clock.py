"""The agent's clock, disciplined by GPS time.

A Raspberry Pi has no real-time clock: after a cold boot without network its clock starts at the last
shutdown (fake-hwclock) or at 1970. Every timestamp the agent makes comes from :class:`AgentClock`.
When a GPS fix carries UTC time that differs from the system clock by more than ``max_drift_s``, the
clock is corrected: by setting the system clock when allowed (``set_system_clock`` and CAP_SYS_TIME),
otherwise by keeping an offset that ``now_ms`` applies. Between fixes the offset is anchored to the
monotonic clock, so it does not jump when NTP or a user changes the system time behind our back.

Until the first correction the clock is not ``synchronised``: samples still carry the best time we
have (and their per-boot sequence numbers keep their order), and ingest rejects timestamps that are
absurdly far in the past, so a Pi that never sees a GPS fix or NTP does not write 1970 into the
database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class AgentClock:
    def __init__(self, *, max_drift_s: float = 2.0, set_system_clock: bool = False,
                 on_correction: Callable[[float], None] | None = None,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_drift_s = max_drift_s
        self.set_system_clock = set_system_clock
        self.on_correction = on_correction
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._offset_s = 0.0
        self.synchronised = False
        self.corrections = 0

    def now(self) -> float:
        with self._lock:
            return self._wall() + self._offset_s

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    @property
    def offset_s(self) -> float:
        return self._offset_s

    def observe_gps_time(self, gps_utc_s: float, fix_age_s: float = 0.0) -> float | None:
        """Compare a fix's UTC time with ours; correct when they differ too much.

        ``fix_age_s`` is how long ago (monotonic) the fix was taken, so a late-processed fix does not
        pull the clock back. Returns the correction applied in seconds, or None.
        """
        with self._lock:
            ours = self._wall() + self._offset_s
            drift = (gps_utc_s + fix_age_s) - ours
            if abs(drift) <= self.max_drift_s:
                self.synchronised = True
                return None
            if self.set_system_clock and self._set_system_time(self._wall() + drift):
                self._offset_s = 0.0
            else:
                self._offset_s += drift
            self.synchronised = True
            self.corrections += 1
        log.warning("clock corrected by %.3f s from GPS time", drift)
        if self.on_correction is not None:
            self.on_correction(drift)
        return drift

    @staticmethod
    def _set_system_time(target_s: float) -> bool:
        try:
            time.clock_settime(time.CLOCK_REALTIME, target_s)
            return True
        except (PermissionError, OSError) as exc:
            log.warning("cannot set the system clock (%s); offsetting timestamps instead", exc)
            return False

    def status(self) -> dict[str, object]:
        return {"synchronised": self.synchronised, "offset_s": round(self._offset_s, 3),
                "corrections": self.corrections}
