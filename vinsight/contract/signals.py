"""The signal catalog: every value a car sends, declared once.

This table is the single source of truth for both sides of the wire. The device agent reads it to
know which OBD-II PID to ask for and how often; the codec reads it for each signal's stable wire
code and quantisation step; ingest reads it to validate ranges and to lay out the typed columns of
the samples table. Adding a signal means adding a row here (with a new, never reused ``code``) and a
migration on the server.

Units follow what the OBD-II standard (SAE J1979) reports, so a value read from the car is stored
as read: speeds in km/h, temperatures in °C, pressures in kPa. Analytics converts to SI where it
computes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Source(enum.StrEnum):
    """Where a value comes from; analytics picks thresholds per source."""

    OBD = "obd"  # an ECU answer to a mode 01 request
    ADAPTER = "adapter"  # the ELM327 itself (e.g. ATRV battery voltage)
    GPS = "gps"  # the GNSS receiver


@dataclass(frozen=True, slots=True)
class Signal:
    """One catalog entry.

    ``code`` is the stable numeric identity on the wire (never reuse one). ``resolution`` is the
    quantisation step of the binary codec: it is at least as fine as what the source can report, so
    encoding loses nothing a sensor actually measured. ``minimum``/``maximum`` are the physically
    valid range that ingest enforces. ``rate_hz`` and ``priority`` seed the device's PID scheduler
    (priority 1 is served first when the adapter cannot keep up).
    """

    code: int
    name: str
    source: Source
    unit: str
    minimum: float
    maximum: float
    resolution: float
    rate_hz: float
    priority: int
    pid: str | None = None  # mode 01 PID, two hex digits
    obd_command: str | None = None  # python-obd command name, when the library has one
    description: str = ""


def _obd(code: int, name: str, pid: str, command: str | None, unit: str, lo: float, hi: float,
         res: float, rate: float, prio: int, desc: str) -> Signal:
    return Signal(code, name, Source.OBD, unit, lo, hi, res, rate, prio, pid, command, desc)


SIGNALS: tuple[Signal, ...] = (
    # --- OBD-II mode 01 -------------------------------------------------------------------------
    _obd(1, "speed", "0D", "SPEED", "km/h", 0, 255, 1.0, 1.0, 1, "Vehicle speed"),
    _obd(2, "rpm", "0C", "RPM", "rpm", 0, 16383.75, 0.25, 1.0, 1, "Engine speed"),
    _obd(3, "engine_load", "04", "ENGINE_LOAD", "%", 0, 100, 0.01, 1.0, 2, "Calculated engine load"),
    _obd(4, "throttle_pos", "11", "THROTTLE_POS", "%", 0, 100, 0.01, 1.0, 2, "Absolute throttle position"),
    _obd(5, "coolant_temp", "05", "COOLANT_TEMP", "degC", -40, 215, 1.0, 0.2, 3, "Engine coolant temperature"),
    _obd(6, "intake_temp", "0F", "INTAKE_TEMP", "degC", -40, 215, 1.0, 0.1, 4, "Intake air temperature"),
    _obd(7, "maf", "10", "MAF", "g/s", 0, 655.35, 0.01, 1.0, 2, "Mass air flow rate"),
    _obd(8, "intake_pressure", "0B", "INTAKE_PRESSURE", "kPa", 0, 255, 1.0, 0.5, 4, "Intake manifold pressure"),
    _obd(9, "fuel_level", "2F", "FUEL_LEVEL", "%", 0, 100, 0.01, 0.05, 4, "Fuel tank level input"),
    _obd(10, "fuel_rate", "5E", "FUEL_RATE", "L/h", 0, 3276.75, 0.05, 1.0, 2, "Engine fuel rate"),
    _obd(11, "control_module_voltage", "42", "CONTROL_MODULE_VOLTAGE", "V", 0, 65.535, 0.001, 0.2, 3,
         "Control module voltage"),
    _obd(12, "timing_advance", "0E", "TIMING_ADVANCE", "deg", -64, 63.5, 0.5, 0.2, 5, "Timing advance"),
    _obd(13, "ambient_air_temp", "46", "AMBIANT_AIR_TEMP", "degC", -40, 215, 1.0, 0.05, 5,
         "Ambient air temperature"),
    _obd(14, "barometric_pressure", "33", "BAROMETRIC_PRESSURE", "kPa", 0, 255, 1.0, 0.05, 5,
         "Absolute barometric pressure"),
    _obd(15, "run_time", "1F", "RUN_TIME", "s", 0, 65535, 1.0, 0.1, 5, "Run time since engine start"),
    _obd(16, "distance_since_dtc_clear", "31", "DISTANCE_SINCE_DTC_CLEAR", "km", 0, 65535, 1.0, 0.02, 5,
         "Distance travelled since codes cleared"),
    _obd(17, "distance_w_mil", "21", "DISTANCE_W_MIL", "km", 0, 65535, 1.0, 0.02, 5,
         "Distance travelled with MIL on"),
    _obd(18, "oil_temp", "5C", "OIL_TEMP", "degC", -40, 215, 1.0, 0.1, 5, "Engine oil temperature"),
    _obd(19, "odometer", "A6", None, "km", 0, 429496729.5, 0.1, 0.02, 4,
         "Odometer (PID A6, model year 2019+ only)"),
    _obd(20, "absolute_load", "43", "ABSOLUTE_LOAD", "%", 0, 25700, 0.01, 0.5, 4, "Absolute load value"),
    # --- The adapter ----------------------------------------------------------------------------
    Signal(30, "battery_voltage", Source.ADAPTER, "V", 0, 30, 0.01, 0.2, 2, None, "ELM_VOLTAGE",
           "12 V battery voltage at the OBD-II socket (ELM327 ATRV)"),
    # --- GNSS -----------------------------------------------------------------------------------
    Signal(40, "latitude", Source.GPS, "deg", -90, 90, 1e-7, 1.0, 1, None, None, "WGS84 latitude"),
    Signal(41, "longitude", Source.GPS, "deg", -180, 180, 1e-7, 1.0, 1, None, None, "WGS84 longitude"),
    Signal(42, "altitude", Source.GPS, "m", -1000, 10000, 0.1, 1.0, 2, None, None, "Altitude above MSL"),
    Signal(43, "gps_speed", Source.GPS, "km/h", 0, 500, 0.01, 1.0, 1, None, None, "Speed over ground"),
    Signal(44, "course", Source.GPS, "deg", 0, 360, 0.1, 1.0, 1, None, None, "Course over ground, true north"),
    Signal(45, "hdop", Source.GPS, "", 0, 99.99, 0.01, 1.0, 2, None, None, "Horizontal dilution of precision"),
    Signal(46, "satellites", Source.GPS, "", 0, 255, 1.0, 1.0, 3, None, None, "Satellites used in the fix"),
    Signal(47, "fix_mode", Source.GPS, "", 0, 3, 1.0, 1.0, 2, None, None, "0/1 no fix, 2 = 2D, 3 = 3D"),
)

BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
BY_CODE: dict[int, Signal] = {s.code: s for s in SIGNALS}
OBD_SIGNALS: tuple[Signal, ...] = tuple(s for s in SIGNALS if s.source is Source.OBD)
GPS_SIGNALS: tuple[Signal, ...] = tuple(s for s in SIGNALS if s.source is Source.GPS)

if len(BY_NAME) != len(SIGNALS) or len(BY_CODE) != len(SIGNALS):  # pragma: no cover - import-time guard
    raise RuntimeError("signal catalog has a duplicate name or code")


def signal(name: str) -> Signal:
    """Look a signal up by name; a KeyError names the unknown signal."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown signal {name!r}") from None
