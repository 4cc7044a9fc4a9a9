"""GNSS position, speed and course: from gpsd's JSON protocol, or raw NMEA from a serial receiver.

gpsd is the normal path on a Pi (it handles u-blox binary modes, PPS and multiple clients); the
agent speaks its JSON protocol over TCP directly (``?WATCH={"enable":true,"json":true}`` then TPV and
SKY reports), so the device needs no extra package. Without gpsd, a receiver's NMEA stream is read
from the serial port and GGA, RMC, GSA and VTG sentences are parsed here, checksums verified,
malformed sentences counted and skipped.

Both produce one :class:`GpsFix` per epoch, delivered to the sink as the catalog's GPS signals
(position only with a 2D/3D fix; the fix mode always), and hand the fix's UTC time to the
:class:`~device_agent.clock.AgentClock`, which disciplines the Pi's clock.
"""

from __future__ import annotations

import calendar
import json
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .clock import AgentClock
from .settings import AgentSettings
from .sink import ReadingSink

log = logging.getLogger(__name__)
KNOTS_TO_KMH = 1.852
MS_TO_KMH = 3.6


@dataclass(slots=True)
class GpsFix:
    time_utc: float | None = None  # Unix seconds from the receiver
    fix_mode: int = 0  # 0/1 none, 2 = 2D, 3 = 3D
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    speed_kmh: float | None = None
    course: float | None = None
    hdop: float | None = None
    satellites: int | None = None

    def signals(self) -> dict[str, float]:
        """The catalog signals this fix carries."""
        out: dict[str, float] = {"fix_mode": float(self.fix_mode)}
        if self.fix_mode >= 2 and self.latitude is not None and self.longitude is not None:
            out["latitude"] = round(self.latitude, 7)
            out["longitude"] = round(self.longitude, 7)
            if self.altitude is not None and self.fix_mode == 3:
                out["altitude"] = round(self.altitude, 1)
            if self.speed_kmh is not None:
                out["gps_speed"] = round(self.speed_kmh, 2)
            if self.course is not None:
                out["course"] = round(self.course % 360, 1)
        if self.hdop is not None:
            out["hdop"] = round(self.hdop, 2)
        if self.satellites is not None:
            out["satellites"] = float(self.satellites)
        return out


# --- NMEA 0183 --------------------------------------------------------------------------------------


class NmeaError(ValueError):
    pass


def nmea_checksum(body: str) -> str:
    value = 0
    for ch in body:
        value ^= ord(ch)
    return f"{value:02X}"


def split_sentence(line: str) -> list[str]:
    """Fields of one sentence after verifying its checksum (``$GPGGA,...*hh``)."""
    line = line.strip()
    if not line.startswith("$") or "*" not in line:
        raise NmeaError("not an NMEA sentence")
    body, _, checksum = line[1:].rpartition("*")
    if len(checksum) != 2 or checksum.upper() != nmea_checksum(body):
        raise NmeaError("bad checksum")
    fields = body.split(",")
    if len(fields[0]) != 5:
        raise NmeaError("bad talker/sentence id")
    return fields


def _coord(value: str, hemisphere: str, degree_digits: int) -> float | None:
    if not value:
        return None
    degrees = int(value[:degree_digits])
    minutes = float(value[degree_digits:])
    if not (0 <= minutes < 60):
        raise NmeaError("minutes out of range")
    coord = degrees + minutes / 60
    if hemisphere in ("S", "W"):
        coord = -coord
    elif hemisphere not in ("N", "E"):
        raise NmeaError("bad hemisphere")
    return coord


def _opt_float(value: str) -> float | None:
    if not value:
        return None
    v = float(value)
    if not math.isfinite(v):
        raise NmeaError("non-finite number")
    return v


def _hms(value: str) -> tuple[int, int, float]:
    return int(value[0:2]), int(value[2:4]), float(value[4:])


class NmeaParser:
    """Merges GGA/RMC/GSA/VTG sentences into one fix per epoch (the UTC time of day they share)."""

    def __init__(self) -> None:
        self.bad_sentences = 0
        self._epoch: str | None = None
        self._fix = GpsFix()
        self._date: tuple[int, int, int] | None = None
        self._mode = 0

    def feed(self, line: str) -> GpsFix | None:
        """Feed one line; returns the previous epoch's fix when a new epoch begins."""
        try:
            fields = split_sentence(line)
            kind = fields[0][2:]
            if kind not in ("GGA", "RMC", "GSA", "VTG"):
                return None
            return self._apply(kind, fields)
        except (NmeaError, ValueError, IndexError):
            self.bad_sentences += 1
            return None

    def _apply(self, kind: str, f: list[str]) -> GpsFix | None:
        done: GpsFix | None = None
        if kind in ("GGA", "RMC"):
            epoch = f[1]
            if epoch and epoch != self._epoch:
                done = self.flush()
                self._epoch = epoch
        fix = self._fix
        if kind == "GGA":
            quality = int(f[6] or 0)
            lat, lon = _coord(f[2], f[3], 2), _coord(f[4], f[5], 3)
            if quality > 0 and lat is not None:
                fix.latitude, fix.longitude = lat, lon
            fix.satellites = int(f[7]) if f[7] else fix.satellites
            fix.hdop = _opt_float(f[8]) if f[8] else fix.hdop
            fix.altitude = _opt_float(f[9])
            if quality == 0:
                self._mode = 1
            elif self._mode < 2:
                self._mode = 3 if fix.altitude is not None else 2
        elif kind == "RMC":
            valid = f[2] == "A"
            if f[9] and len(f[9]) == 6:
                self._date = (2000 + int(f[9][4:6]), int(f[9][2:4]), int(f[9][0:2]))
            if valid:
                fix.latitude, fix.longitude = _coord(f[3], f[4], 2), _coord(f[5], f[6], 3)
                knots = _opt_float(f[7])
                fix.speed_kmh = knots * KNOTS_TO_KMH if knots is not None else None
                fix.course = _opt_float(f[8])
            else:
                self._mode = 1
        elif kind == "GSA":
            mode = int(f[2] or 1)
            self._mode = mode
            fix.hdop = _opt_float(f[16]) if len(f) > 16 and f[16] else fix.hdop
        elif kind == "VTG":
            fix.course = _opt_float(f[1]) if f[1] else fix.course
            fix.speed_kmh = _opt_float(f[7]) if len(f) > 7 and f[7] else fix.speed_kmh
        return done

    def flush(self) -> GpsFix | None:
        if self._epoch is None:
            return None
        fix = self._fix
        fix.fix_mode = self._mode
        if self._date is not None:
            h, m, s = _hms(self._epoch)
            y, mo, d = self._date
            fix.time_utc = calendar.timegm((y, mo, d, h, m, 0)) + s
        self._fix, self._epoch, self._mode = GpsFix(), None, 0
        return fix


# --- gpsd JSON ------------------------------------------------------------------------------------------


def parse_gpsd_time(text: str) -> float | None:
    """gpsd's ISO 8601 UTC ('2024-01-11T23:57:18.000Z') to Unix seconds."""
    try:
        date, _, clock = text.rstrip("Z").partition("T")
        y, mo, d = (int(x) for x in date.split("-"))
        hh, mm, ss = clock.split(":")
        return calendar.timegm((y, mo, d, int(hh), int(mm), 0)) + float(ss)
    except (ValueError, AttributeError):
        return None


def fix_from_tpv(tpv: dict[str, Any], sky: dict[str, Any] | None) -> GpsFix:
    fix = GpsFix(fix_mode=int(tpv.get("mode", 0) or 0))
    fix.time_utc = parse_gpsd_time(tpv["time"]) if "time" in tpv else None
    fix.latitude, fix.longitude = tpv.get("lat"), tpv.get("lon")
    fix.altitude = tpv.get("altMSL", tpv.get("alt"))
    if tpv.get("speed") is not None:
        fix.speed_kmh = float(tpv["speed"]) * MS_TO_KMH
    fix.course = tpv.get("track")
    if sky:
        fix.hdop = sky.get("hdop")
        used = sky.get("uSat")
        if used is None and isinstance(sky.get("satellites"), list):
            used = sum(1 for s in sky["satellites"] if s.get("used"))
        fix.satellites = used
    return fix


@dataclass
class _Stats:
    fixes: int = 0
    bad_sentences: int = 0
    connected: bool = False
    reconnects: int = 0
    last_fix: GpsFix | None = None
    last_fix_mono: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class GpsSource:
    """Common delivery of fixes; subclasses supply the transport."""

    mode = "none"

    def __init__(self, settings: AgentSettings, sink: ReadingSink, clock: AgentClock) -> None:
        self.settings = settings
        self.sink = sink
        self.clock = clock
        self.stats = _Stats()

    def deliver(self, fix: GpsFix) -> None:
        if fix.time_utc is not None and fix.fix_mode >= 2:
            self.clock.observe_gps_time(fix.time_utc)
        ts = self.clock.now_ms()
        for name, value in fix.signals().items():
            self.sink.reading(name, value, ts)
        self.stats.fixes += 1
        self.stats.last_fix = fix
        self.stats.last_fix_mono = time.monotonic()

    def last_fix(self) -> GpsFix | None:
        return self.stats.last_fix

    def status(self) -> dict[str, Any]:
        fix = self.stats.last_fix
        age = None if self.stats.last_fix_mono is None else round(time.monotonic() - self.stats.last_fix_mono, 1)
        return {"mode": self.mode, "connected": self.stats.connected, "fixes": self.stats.fixes,
                "fix_mode": fix.fix_mode if fix else 0, "hdop": fix.hdop if fix else None,
                "satellites": fix.satellites if fix else None, "last_fix_age_s": age,
                "bad_sentences": self.stats.bad_sentences, "reconnects": self.stats.reconnects}

    def run(self, stop: threading.Event) -> None:
        delay = self.settings.reconnect_min_s
        while not stop.is_set():
            try:
                self._session(stop)
                delay = self.settings.reconnect_min_s
            except (OSError, ValueError) as exc:
                log.warning("GPS %s: %s", self.mode, exc)
            self.stats.connected = False
            if stop.wait(delay):
                return
            delay = min(delay * 2, self.settings.reconnect_max_s)
            self.stats.reconnects += 1

    def _session(self, stop: threading.Event) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class GpsdSource(GpsSource):
    mode = "gpsd"

    def _session(self, stop: threading.Event) -> None:
        s = self.settings
        with socket.create_connection((s.gpsd_host, s.gpsd_port), timeout=5) as sock:
            sock.settimeout(1.0)
            sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
            self.stats.connected = True
            buffer = b""
            sky: dict[str, Any] | None = None
            while not stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise OSError("gpsd closed the connection")
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        report = json.loads(line)
                    except ValueError:
                        self.stats.bad_sentences += 1
                        continue
                    cls = report.get("class") if isinstance(report, dict) else None
                    if cls == "SKY":
                        sky = report
                    elif cls == "TPV":
                        self.deliver(fix_from_tpv(report, sky))


class NmeaSource(GpsSource):
    mode = "nmea"

    def _session(self, stop: threading.Event) -> None:
        import serial

        s = self.settings
        parser = NmeaParser()
        with serial.serial_for_url(s.nmea_port, baudrate=s.nmea_baudrate, timeout=1.0) as port:
            self.stats.connected = True
            buffer = b""
            while not stop.is_set():
                chunk = port.read(port.in_waiting or 1)
                if not chunk:
                    continue
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    fix = parser.feed(raw.decode("ascii", errors="replace"))
                    self.stats.bad_sentences = parser.bad_sentences
                    if fix is not None:
                        self.deliver(fix)
                if len(buffer) > 4096:  # no line end in sight: garbage, not NMEA
                    buffer = b""
                    parser.bad_sentences += 1


def make_gps_source(settings: AgentSettings, sink: ReadingSink, clock: AgentClock) -> GpsSource | None:
    if settings.gps_mode == "gpsd":
        return GpsdSource(settings, sink, clock)
    if settings.gps_mode == "nmea":
        return NmeaSource(settings, sink, clock)
    return None
