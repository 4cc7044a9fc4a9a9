"""An emulated car for demos and tests: the ELM327-emulator (PyPI ``ELM327-emulator``) in-process.

It needs the ``dev`` extra. Two faults of the stock emulator 4.0.0 are fixed while it runs: mode
03/07/0A answers get the ISO 15765-4 DTC count byte (without it python-obd misdecodes codes), and the
VIN answer is framed the way a CAN ECU frames it. The battery voltage (``ATRV``) and the trouble codes
are controllable, and the scenario can be switched between ``car`` and ``engineoff`` at run time.
"""

from __future__ import annotations

import time
from typing import Any

from .embedded import free_port

DEFAULT_VIN = "1FA0ZZZ99ZTS39002"  # leads with '1' and ends with '0','0','2': python-obd would strip them


class Emulator:
    def __init__(self, *, scenario: str = "car", delay: float = 0.05, vin: str = DEFAULT_VIN, pty: bool = False,
                 port: int | None = None) -> None:
        import elm.obd_message as om

        self.om = om
        self.scenario = scenario
        self.delay = delay
        self.vin = vin
        self.pty = pty
        self.port = port or free_port()
        self.voltage = 14.2
        self._saved: list[tuple[Any, str, Any]] = []
        self.elm = None

    # --- patches of the emulator's tables (restored on stop) ----------------------------------------

    def _patch(self, obj: Any, key: str, value: Any) -> None:
        if isinstance(obj, dict):
            self._saved.append((obj, key, obj.get(key)))
            obj[key] = value
        else:
            self._saved.append((obj, key, getattr(obj, key)))
            setattr(obj, key, value)

    def _install(self) -> None:
        om = self.om
        emulator = self

        def dtc_frames_with_count(_elm, dtc_list, sid, header=om.ECU_R_ADDR_E):
            codes = [] if _elm.counters.get("cmd_dtc_cleared") else [d.replace(" ", "") for d in dtc_list if d]
            data = [sid, f"{len(codes):02X}"] + [c[i:i + 2] for c in codes for i in (0, 2)]
            return om.iso_tp_frames(data, header)

        self._patch(om, "dtc_frames", dtc_frames_with_count)
        vin_bytes = ["49", "02", "01"] + [f"{ord(c):02X}" for c in self.vin]
        self._patch(om.ObdMessage["car"], "VIN", {
            "Request": "^0902" + om.ELM_FOOTER, "Descr": "VIN",
            "ResponseFooter": lambda _e, _c, _p, _u: om.iso_tp_frames(vin_bytes),
        })
        self._patch(om.ObdMessage["AT"], "AT_R_VOLT", {
            "Request": "^ATRV$", "Descr": "battery voltage",
            "ResponseFooter": lambda _e, _c, _p, _u: om.ST(f"{emulator.voltage:.1f}V"),
        })
        for name in ("DTC_STORED", "DTC_PENDING", "DTC_PERMANENT"):
            getattr(om, name).clear()

    def set_dtcs(self, stored=(), pending=(), permanent=()) -> None:
        for name, codes in (("DTC_STORED", stored), ("DTC_PENDING", pending), ("DTC_PERMANENT", permanent)):
            target = getattr(self.om, name)
            target[:] = list(codes)

    def set_scenario(self, scenario: str) -> None:
        self.scenario = scenario
        self.elm.set_sorted_obd_msg(scenario)

    def set_delay(self, delay: float) -> None:
        self.delay = delay
        self.elm.delay = delay

    @property
    def url(self) -> str:
        return self.elm.slave_name if self.pty else f"socket://127.0.0.1:{self.port}"

    def start(self) -> Emulator:
        from elm import Elm

        if not self._saved:
            self._install()
        self.elm = Elm(net_port=None if self.pty else self.port)
        self.elm.__enter__()
        deadline = time.monotonic() + 10
        while self.elm.threadState != self.elm.THREAD.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.02)
        self.elm.set_sorted_obd_msg(self.scenario)
        self.elm.delay = self.delay
        return self

    def stop(self, restore: bool = True) -> None:
        if self.elm is not None:
            self.elm.__exit__(None, None, None)
            self.elm = None
        if restore:
            for obj, key, value in reversed(self._saved):
                if isinstance(obj, dict):
                    obj[key] = value
                else:
                    setattr(obj, key, value)
            self._saved.clear()
            for name in ("DTC_STORED", "DTC_PENDING", "DTC_PERMANENT"):
                getattr(self.om, name).clear()
