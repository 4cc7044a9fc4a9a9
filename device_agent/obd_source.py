"""The OBD-II source: an ELM327 driven through python-obd, supervised.

python-obd's ``Async`` watch loop is not used: its thread simply exits when the adapter disconnects
and it asks for one PID per request with a fixed pause between rounds. Here a single thread owns the
synchronous ``obd.OBD`` connection and

* connects (USB serial, Bluetooth rfcomm device, or ``socket://host:port`` for Wi-Fi adapters),
  reconnects with exponential backoff when the link dies, and reports each change as an event;
* identifies the car: VIN from the raw mode 09 answer (:mod:`device_agent.vin`), supported PIDs from
  the 0100/0120/... bitmaps, and whether the ECU answers multi-PID requests, all cached per VIN;
* polls per :class:`~device_agent.scheduler.PidScheduler`, packing due PIDs into multi-PID requests
  (:mod:`device_agent.obd_pids`), and feeds the measured latency back into the plan;
* reads trouble codes and MIL periodically and reports changes (:mod:`device_agent.dtc`);
* applies the battery-safety policy (:mod:`device_agent.power`): no ECU traffic while parked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import obd

from vinsight.contract import DtcType, EventKind, SignalPlan
from vinsight.contract.signals import BY_NAME, Source

from .dtc import DtcTracker, decode_dtc_answer, mil_from_status
from .obd_pids import PIDS, PidSpec, pack_requests, parse_response, request_bytes, supported_from_bitmaps
from .power import EngineState, PowerPolicy
from .scheduler import PidScheduler
from .settings import AgentSettings
from .sink import ReadingSink
from .vin import VinError, check_digit_ok, decode_vin

log = logging.getLogger(__name__)

DTC_SERVICES = {DtcType.STORED: 0x03, DtcType.PENDING: 0x07, DtcType.PERMANENT: 0x0A}
DEAD_LINK_SILENCES = 3  # consecutive unanswered adapter commands (ATRV) that mean the link is gone


def default_plans() -> dict[str, SignalPlan]:
    """The catalog's rates and priorities for everything the OBD link can read."""
    return {s.name: SignalPlan(s.rate_hz, s.priority) for s in BY_NAME.values()
            if s.source is Source.OBD or s.name == "battery_voltage"}


def describe_dtc(code: str) -> str | None:
    entry = obd.codes.DTC.get(code) if hasattr(obd, "codes") else None
    return entry or None


class LinkDown(Exception):
    """The adapter stopped answering; reconnect."""


class ObdSource:
    def __init__(self, settings: AgentSettings, sink: ReadingSink, *,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 dtc_interval_s: float = 30.0, plans: dict[str, SignalPlan] | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.clock_ms = clock_ms
        self.dtc_interval_s = dtc_interval_s
        self.state_dir = Path(settings.state_dir)
        self.scheduler = PidScheduler(plans or default_plans())
        self.power = PowerPolicy(
            engine_off_after_s=settings.engine_off_after_s, heartbeat_interval_s=settings.heartbeat_interval_s,
            low_voltage_cutoff_v=settings.low_voltage_cutoff_v, wake_voltage_v=settings.wake_voltage_v,
            wake_voltage_jump_v=settings.wake_voltage_jump_v)
        self.dtc = DtcTracker(self.state_dir / "dtc_state.json")
        self.connection: obd.OBD | None = None
        self.vin: str | None = None
        self.supported: set[int] = set()
        self.multi_pid = False
        self.ecu_requests = 0  # requests that reach the car's ECUs (the tests hold parked mode to zero)
        self.adapter_requests = 0
        self.reconnects = 0
        self.state = "disconnected"
        self.protocol = ""
        self.last_error = ""
        self._silences = 0
        self._lock = threading.Lock()
        self._next_dtc = 0.0

    # --- control from other threads ----------------------------------------------------------------

    def apply_plan(self, plans: dict[str, SignalPlan]) -> None:
        with self._lock:
            merged = self.scheduler.targets()
            merged.update(plans)
            self.scheduler.set_plans(merged, time.monotonic())

    def set_power_limits(self, low_voltage_cutoff_v: float | None, heartbeat_interval_s: float | None) -> None:
        with self._lock:
            if low_voltage_cutoff_v is not None:
                self.power.low_voltage_cutoff_v = low_voltage_cutoff_v
            if heartbeat_interval_s is not None:
                self.power.heartbeat_interval_s = heartbeat_interval_s

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            return {
                "adapter": {"state": self.state, "port": self.settings.obd_port, "protocol": self.protocol,
                            "vin": self.vin, "multi_pid": self.multi_pid, "reconnects": self.reconnects,
                            "read_cost_ms": round(self.scheduler.read_cost_s * 1000, 1),
                            "ecu_requests": self.ecu_requests, "last_error": self.last_error},
                "rates_hz": self.scheduler.achieved_hz(now),
                "power": self.power.status(),
            }

    # --- the supervised loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        delay = self.settings.reconnect_min_s
        while not stop.is_set():
            try:
                self._connect()
                delay = self.settings.reconnect_min_s
                self._identify()
                self._poll(stop)
            except LinkDown as exc:
                self.last_error = str(exc)
            except Exception as exc:  # a driver bug must not end the agent's only link to the car
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("OBD loop error")
            finally:
                self._disconnect()
            if stop.wait(delay):
                break
            delay = min(delay * 2, self.settings.reconnect_max_s)

    def _connect(self) -> None:
        s = self.settings
        self.state = "connecting"
        connection = obd.OBD(s.obd_port, baudrate=s.obd_baudrate, protocol=s.obd_protocol, fast=s.obd_fast,
                             timeout=s.obd_timeout_s, check_voltage=False)
        if connection.status() == obd.OBDStatus.NOT_CONNECTED:
            connection.close()
            raise LinkDown(f"no ELM327 answered on {s.obd_port}")
        # python-obd 0.7.3 opens the port with a fixed 10 s read timeout and retries a silent read
        # about ten times per request: a dead Bluetooth or Wi-Fi link would cost ~100 s per request
        # before it is noticed. Connected, an ELM327 answers within its ATST timeout (~200 ms).
        port = getattr(connection.interface, "_ELM327__port", None)
        if port is not None:
            port.timeout = s.obd_read_timeout_s
        self.connection = connection
        self.protocol = connection.protocol_name()
        self.state = "connected"
        self._silences = 0
        self.reconnects += 1
        self.sink.event(EventKind.ADAPTER_CONNECTED, {"port": s.obd_port, "protocol": self.protocol,
                                                       "status": str(connection.status())})
        log.info("ELM327 connected on %s (%s)", s.obd_port, self.protocol)

    def _disconnect(self) -> None:
        if self.connection is None:
            return
        with contextlib.suppress(Exception):  # closing a dead port may fail; nothing to do about it
            self.connection.close()
        self.connection = None
        self.state = "disconnected"
        self.sink.event(EventKind.ADAPTER_DISCONNECTED, {"port": self.settings.obd_port, "error": self.last_error})

    # --- requests --------------------------------------------------------------------------------------

    def _send(self, command: bytes, ecu: bool = True) -> list[bytes]:
        """One request; the data bytes of each ECU message. Raises LinkDown if the adapter is gone."""
        conn = self.connection
        if conn is None:
            raise LinkDown("not connected")
        if ecu:
            self.ecu_requests += 1
        else:
            self.adapter_requests += 1
        messages = conn.interface.send_and_parse(command)
        if messages is None or conn.interface.status() == obd.OBDStatus.NOT_CONNECTED:
            raise LinkDown("adapter disconnected")
        return [bytes(m.data) for m in messages if m.data]

    def _read_voltage(self) -> float | None:
        conn = self.connection
        if conn is None:
            raise LinkDown("not connected")
        self.adapter_requests += 1
        response = conn.query(obd.commands.ELM_VOLTAGE, force=True)
        if conn.interface.status() == obd.OBDStatus.NOT_CONNECTED:
            raise LinkDown("adapter disconnected")
        if response.is_null():
            self._silences += 1
            if self._silences >= DEAD_LINK_SILENCES:
                raise LinkDown("adapter stopped answering ATRV")
            return None
        self._silences = 0
        return float(response.value.magnitude)

    # --- identification ------------------------------------------------------------------------------------

    def _identify(self) -> None:
        vin = None
        try:
            vin = decode_vin(self._send(b"0902"))
        except VinError as exc:
            log.warning("no VIN: %s", exc)
        if vin is None:
            return  # engine off or no mode 09: identify on the next connection
        cache_file = self.state_dir / "pid_cache.json"
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
        entry = cache.get(vin)
        if entry is None:
            entry = {"supported": sorted(self._discover_supported()), "multi_pid": self._probe_multi_pid(),
                     "protocol": self.protocol, "discovered_ms": self.clock_ms()}
            cache[vin] = entry
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(cache_file)
        self.vin = vin
        self.supported = set(entry["supported"])
        self.multi_pid = bool(entry["multi_pid"])
        names = [*sorted(n for n, spec in PIDS.items() if spec.pid in self.supported), "battery_voltage"]
        self.sink.event(EventKind.VEHICLE_IDENTIFIED, {"vin": vin, "vin_check_digit_ok": check_digit_ok(vin),
                                                       "supported": names, "protocol": self.protocol})

    def _discover_supported(self) -> set[int]:
        bitmaps: dict[int, bytes] = {}
        base = 0x00
        while base <= 0xE0:
            answers = self._send(f"01{base:02X}".encode())
            data = next((a for a in answers if len(a) >= 6 and a[0] == 0x41 and a[1] == base), None)
            if data is None:
                break
            bitmaps[base] = data[2:6]
            if not data[5] & 0x01:  # "PIDs base+0x21..0x40 supported" bit
                break
            base += 0x20
        return supported_from_bitmaps(bitmaps)

    def _probe_multi_pid(self) -> bool:
        """Use multi-PID requests only if the ECU answers them correctly AND they are cheaper per PID.

        On a real ELM327 one request costs the adapter's round trip whatever it carries, so packing
        several PIDs wins several-fold; some adapters and emulators process each PID of a multi-PID
        request as a request of its own, where packing only adds cost. Timing both settles it."""
        trio = [PIDS[n] for n in ("rpm", "speed", "coolant_temp") if self._readable(n) is not None]
        if len(trio) < 2:
            return False
        try:
            values = parse_response(b"".join(self._send(request_bytes(trio))), trio)
        except ValueError:
            return False
        if len(values) != len(trio):
            return False
        single = multi = 0.0
        for _ in range(3):
            started = time.monotonic()
            self._send(request_bytes(trio[:1]))
            single += time.monotonic() - started
            started = time.monotonic()
            self._send(request_bytes(trio))
            multi += (time.monotonic() - started) / len(trio)
        log.info("per-PID cost: single %.1f ms, multi %.1f ms", single / 3 * 1000, multi / 3 * 1000)
        return multi < 0.9 * single

    # --- polling -----------------------------------------------------------------------------------------------

    def _readable(self, name: str) -> PidSpec | None:
        spec = PIDS.get(name)
        if spec is None or (self.supported and spec.pid not in self.supported):
            return None
        return spec

    def _poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            with self._lock:
                may_poll = self.power.may_poll_ecu()
            did_work = self._poll_running(now) if may_poll else self._poll_parked(now)
            if not did_work:
                with self._lock:
                    wake = self.scheduler.next_due() if self.power.may_poll_ecu() else now + 0.5
                stop.wait(min(0.5, max(0.005, wake - time.monotonic())))

    def _poll_running(self, now: float) -> bool:
        if self.vin is None and self.power.state is EngineState.RUNNING:
            self._identify()  # the ECU woke up after we connected with the engine off
        if now >= self._next_dtc and self.power.state is EngineState.RUNNING:
            self._read_dtcs()
            # Counted from the end of the read: a slow adapter must not spend all its time on DTCs.
            self._next_dtc = time.monotonic() + self.dtc_interval_s
            return True
        with self._lock:
            due = self.scheduler.due(now)
        if not due:
            return False
        if "battery_voltage" in due:
            volts = self._read_voltage()
            with self._lock:
                self.scheduler.mark_read("battery_voltage", now)
            if volts is not None:
                self.sink.reading("battery_voltage", volts, self.clock_ms())
                self.scheduler.record_value("battery_voltage", now)
                self._apply_power(self.power.on_voltage(volts, now))
            return True
        specs: list[PidSpec] = []
        for name in due:
            spec = self._readable(name)
            if spec is None:
                with self._lock:
                    self.scheduler.mark_read(name, now)  # unsupported: keep it from blocking the queue
                continue
            specs.append(spec)
        if not specs:
            return True
        group = pack_requests(specs, self.multi_pid, single_frame=False)[0]
        self._request_group(group, now)
        return True

    def _request_group(self, group: list[PidSpec], now: float) -> dict[str, float]:
        started = time.monotonic()
        answers = self._send(request_bytes(group))
        latency = time.monotonic() - started
        ts = self.clock_ms()
        values: dict[str, float] = {}
        try:
            for answer in answers:
                values.update(parse_response(answer, group))
        except ValueError as exc:
            if len(group) > 1:
                log.warning("multi-PID answer %s did not parse (%s); using single-PID requests",
                            [a.hex() for a in answers], exc)
                self.multi_pid = False
            values = {}
        with self._lock:
            self.scheduler.observe(latency, len(group))
            for spec in group:
                self.scheduler.mark_read(spec.signal.name, now)
                if spec.signal.name in values:
                    self.scheduler.record_value(spec.signal.name, now)
        for name, value in values.items():
            self.sink.reading(name, value, ts)
        if any(s.signal.name == "rpm" for s in group):
            if not answers and self._read_voltage() is None:
                raise LinkDown("neither the ECU nor the adapter answers")
            with self._lock:
                events = self.power.on_rpm(values.get("rpm"), now)
            self._apply_power(events)
        elif not values and answers == []:
            # Silence from the ECU is normal when the engine stops; silence from the adapter is not.
            if self._read_voltage() is None:
                raise LinkDown("neither the ECU nor the adapter answers")
            with self._lock:
                events = self.power.on_rpm(None, now)  # the ECU went silent
            self._apply_power(events)
        return values

    def _poll_parked(self, now: float) -> bool:
        if self.power.voltage_due(now):
            volts = self._read_voltage()
            if volts is not None:
                self.sink.reading("battery_voltage", volts, self.clock_ms())
            with self._lock:
                events = self.power.on_voltage(volts, now)
            self._apply_power(events)
            return True
        if self.power.wants_probe():
            self._request_group([PIDS["rpm"]], now)
            if self.power.state is not EngineState.RUNNING:
                with self._lock:
                    self.power._probe_wanted = False
            return True
        return False

    def _apply_power(self, events: list[tuple[EventKind, dict[str, Any]]]) -> None:
        for kind, data in events:
            self.sink.event(kind, data)
            if kind is EventKind.ENGINE_ON:
                self._next_dtc = 0.0
                with self._lock:
                    self.scheduler.set_plans(self.scheduler.targets(), time.monotonic())

    def _read_dtcs(self) -> None:
        readings: dict[DtcType, list[str]] = {}
        for dtc_type, service in DTC_SERVICES.items():
            answers = self._send(f"{service:02X}".encode())
            if answers:
                readings[dtc_type] = decode_dtc_answer(answers, service)
        status = self._send(b"0101")
        if not readings and not status and self._read_voltage() is None:
            raise LinkDown("neither the ECU nor the adapter answers")
        mil = next((m for a in status if (m := mil_from_status(a)) is not None), None)
        for kind, data in self.dtc.update(readings, mil, describe_dtc):
            self.sink.event(kind, data)
