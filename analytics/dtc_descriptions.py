"""Plain-language descriptions, categories and severities of generic OBD-II trouble codes.

Why a table of our own: devices report codes (``dtc_new`` events) with whatever description their
OBD library ships, often none. The dealer portal needs every code described the same way, plus a
category and a severity from which lead priority follows. The descriptions here are written for
this project from the meanings SAE J2012 assigns to the *generic* (SAE-controlled) code ranges:
P0xxx, P2xxx, P34xx–P39xx, C0xxx, B0xxx, U0xxx. They are not copied from any third-party table
(python-OBD's ``obd/codes.py`` included). Families that follow a fixed pattern (oxygen sensors,
injectors, misfires, ignition coils, cylinder deactivation) are generated from that pattern.

Manufacturer-controlled ranges (P1xxx, P30xx–P33xx, C1/C2, B1/B2, U1/U2) have no generic meaning.
Any code that has no entry, manufacturer-specific or generic, gets a description built from its
system letter and sub-system digit (``"P03xx: ignition system or misfire"``), so every well-formed
code has a description. A well-formed code is what Mode 03/07/0A can encode (J2012 / ISO 15031-6):
a letter P/C/B/U, a digit 0–3, then three hex digits.

Severity is what a dealer acts on first:

* ``high``: safety-relevant, or damage follows if driving continues: random/multi-cylinder
  misfire (flashing MIL, catalyst damage), overheating, oil pressure, lost ECU/ABS communication,
  airbag deployment circuits, throttle-actuator limp mode.
* ``medium``: drivability or a failed component that will not heal: single-cylinder misfire,
  injector, transmission, fuel trim, catalyst efficiency, sensors feeding fuel control.
* ``low``: emissions bookkeeping and intermittent circuits: EVAP leaks, fuel-cap, heater circuits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

WELL_FORMED_DTC = re.compile(r"^[PCBU][0-3][0-9A-F]{3}$")


class Category(StrEnum):
    """What part of ownership a fault touches; the dealer portal groups leads by it."""

    EMISSIONS = "emissions"  # inspection failure, catalyst/EVAP/EGR/O2: legal but not urgent
    DRIVABILITY = "drivability"  # misfire, idle, fuel delivery, transmission: the customer feels it
    SAFETY = "safety"  # braking, restraints, overheating, loss of engine control
    ELECTRICAL = "electrical"  # charging system, supply voltage, control-module power
    NETWORK = "network"  # lost or invalid communication between modules (U codes)
    BODY = "body"  # comfort and convenience functions


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


SEVERITY_RANK: dict[Severity, int] = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3}

SYSTEMS: dict[str, str] = {"P": "powertrain", "C": "chassis", "B": "body", "U": "network"}


@dataclass(frozen=True, slots=True)
class DtcInfo:
    code: str
    description: str
    system: str  # powertrain / chassis / body / network
    category: Category
    severity: Severity
    generic: bool  # True for SAE-controlled ranges, False for manufacturer-controlled ones
    known: bool  # True when the code has its own entry, False when described from its family


_C, _S = Category, Severity
# code -> (description, category, severity)
_TABLE: dict[str, tuple[str, Category, Severity]] = {}


def _add(code: str, description: str, category: Category, severity: Severity) -> None:
    _TABLE[code] = (description, category, severity)


def _sensor_family(first: int, sensor: str, category: Category, severity: Severity,
                   suffixes: tuple[str, ...] = ("circuit malfunction", "circuit range/performance",
                                                "circuit low input", "circuit high input",
                                                "circuit intermittent")) -> None:
    """The common J2012 five-code sensor block: circuit, range/performance, low, high, intermittent."""
    for offset, suffix in enumerate(suffixes):
        sev = Severity.LOW if suffix.endswith("intermittent") and severity is Severity.MEDIUM else severity
        _add(f"P{first + offset:04d}", f"{sensor} {suffix}", category, sev)



def _ordinal_letter(n: int) -> str:
    return "ABCDEFGHIJKL"[n - 1]


# --- P00xx-P01xx: fuel and air metering --------------------------------------------------------
_sensor_family(100, "Mass air flow (MAF) sensor A", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(105, "Manifold absolute pressure / barometric pressure sensor", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(110, "Intake air temperature sensor 1", _C.EMISSIONS, _S.LOW)
_sensor_family(115, "Engine coolant temperature sensor 1", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(120, "Throttle/pedal position sensor A", _C.SAFETY, _S.HIGH)
_add("P0125", "Coolant temperature too low for closed-loop fuel control", _C.EMISSIONS, _S.LOW)
_add("P0126", "Coolant temperature too low for stable operation", _C.DRIVABILITY, _S.LOW)
_add("P0127", "Intake air temperature too high", _C.DRIVABILITY, _S.LOW)
_add("P0128", "Coolant below thermostat regulating temperature (thermostat stuck open?)", _C.EMISSIONS, _S.MEDIUM)
_add("P0129", "Barometric pressure too low", _C.DRIVABILITY, _S.LOW)
# Oxygen sensors: six codes per (bank, sensor) position.
for _first, _bank, _sensor in ((130, 1, 1), (136, 1, 2), (142, 1, 3), (150, 2, 1), (156, 2, 2), (162, 2, 3)):
    _where = f"bank {_bank} sensor {_sensor}"
    _add(f"P{_first:04d}", f"O2 sensor circuit malfunction ({_where})", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 1:04d}", f"O2 sensor circuit low voltage ({_where})", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 2:04d}", f"O2 sensor circuit high voltage ({_where})", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 3:04d}", f"O2 sensor slow response ({_where})", _C.EMISSIONS, _S.LOW)
    _add(f"P{_first + 4:04d}", f"O2 sensor no activity detected ({_where})", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 5:04d}", f"O2 sensor heater circuit malfunction ({_where})", _C.EMISSIONS, _S.LOW)
for _bank, _first in ((1, 170), (2, 173)):
    _add(f"P{_first:04d}", f"Fuel trim malfunction bank {_bank}", _C.DRIVABILITY, _S.MEDIUM)
    _add(f"P{_first + 1:04d}", f"System too lean bank {_bank}", _C.DRIVABILITY, _S.MEDIUM)
    _add(f"P{_first + 2:04d}", f"System too rich bank {_bank}", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(176, "Fuel composition sensor", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(180, "Fuel temperature sensor A", _C.DRIVABILITY, _S.LOW)
_sensor_family(185, "Fuel temperature sensor B", _C.DRIVABILITY, _S.LOW)
_sensor_family(190, "Fuel rail pressure sensor", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(195, "Engine oil temperature sensor", _C.DRIVABILITY, _S.LOW)

# --- P02xx: fuel and air metering (injector circuit) ------------------------------------------
_add("P0200", "Injector circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
for _cyl in range(1, 13):
    _add(f"P{200 + _cyl:04d}", f"Injector circuit malfunction, cylinder {_cyl}", _C.DRIVABILITY, _S.MEDIUM)
    _base = 261 + 3 * (_cyl - 1)
    _add(f"P{_base:04d}", f"Cylinder {_cyl} injector circuit low", _C.DRIVABILITY, _S.MEDIUM)
    _add(f"P{_base + 1:04d}", f"Cylinder {_cyl} injector circuit high", _C.DRIVABILITY, _S.MEDIUM)
    _add(f"P{_base + 2:04d}", f"Cylinder {_cyl} contribution/balance fault", _C.DRIVABILITY, _S.MEDIUM)
_add("P0213", "Cold start injector 1 malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0214", "Cold start injector 2 malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0215", "Engine shutoff solenoid malfunction", _C.SAFETY, _S.HIGH)
_add("P0216", "Injection timing control circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0217", "Engine over-temperature condition", _C.SAFETY, _S.HIGH)
_add("P0218", "Transmission fluid over-temperature condition", _C.SAFETY, _S.HIGH)
_add("P0219", "Engine overspeed condition", _C.SAFETY, _S.HIGH)
_sensor_family(220, "Throttle/pedal position sensor B", _C.SAFETY, _S.HIGH)
_sensor_family(225, "Throttle/pedal position sensor C", _C.SAFETY, _S.HIGH)
_add("P0230", "Fuel pump primary circuit malfunction", _C.DRIVABILITY, _S.HIGH)
_add("P0231", "Fuel pump secondary circuit low", _C.DRIVABILITY, _S.HIGH)
_add("P0232", "Fuel pump secondary circuit high", _C.DRIVABILITY, _S.HIGH)
_add("P0233", "Fuel pump secondary circuit intermittent", _C.DRIVABILITY, _S.MEDIUM)
_add("P0234", "Turbocharger/supercharger overboost condition", _C.DRIVABILITY, _S.HIGH)
_add("P0235", "Turbocharger boost sensor A circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0236", "Turbocharger boost sensor A circuit range/performance", _C.DRIVABILITY, _S.MEDIUM)
_add("P0237", "Turbocharger boost sensor A circuit low", _C.DRIVABILITY, _S.MEDIUM)
_add("P0238", "Turbocharger boost sensor A circuit high", _C.DRIVABILITY, _S.MEDIUM)
_add("P0243", "Turbocharger wastegate solenoid A malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0244", "Turbocharger wastegate solenoid A range/performance", _C.DRIVABILITY, _S.MEDIUM)
_add("P0245", "Turbocharger wastegate solenoid A low", _C.DRIVABILITY, _S.MEDIUM)
_add("P0246", "Turbocharger wastegate solenoid A high", _C.DRIVABILITY, _S.MEDIUM)
_add("P0298", "Engine oil over-temperature", _C.SAFETY, _S.HIGH)
_add("P0299", "Turbocharger/supercharger underboost condition", _C.DRIVABILITY, _S.MEDIUM)

# --- P03xx: ignition system or misfire --------------------------------------------------------
_add("P0300", "Random/multiple cylinder misfire detected", _C.DRIVABILITY, _S.HIGH)
for _cyl in range(1, 13):
    _add(f"P{300 + _cyl:04d}", f"Cylinder {_cyl} misfire detected", _C.DRIVABILITY, _S.MEDIUM)
    _add(f"P{350 + _cyl:04d}", f"Ignition coil {_ordinal_letter(_cyl)} primary/secondary circuit malfunction "
                               f"(cylinder {_cyl})", _C.DRIVABILITY, _S.MEDIUM)
_add("P0313", "Misfire detected with low fuel", _C.DRIVABILITY, _S.MEDIUM)
_add("P0314", "Single cylinder misfire (cylinder not specified)", _C.DRIVABILITY, _S.MEDIUM)
_add("P0320", "Ignition/distributor engine speed input circuit malfunction", _C.DRIVABILITY, _S.HIGH)
_add("P0321", "Ignition/distributor engine speed input circuit range/performance", _C.DRIVABILITY, _S.MEDIUM)
_add("P0322", "Ignition/distributor engine speed input circuit no signal", _C.DRIVABILITY, _S.HIGH)
_add("P0323", "Ignition/distributor engine speed input circuit intermittent", _C.DRIVABILITY, _S.MEDIUM)
for _first, _which in ((325, "1 (bank 1 or single sensor)"), (330, "2 (bank 2)")):
    _sensor_family(_first, f"Knock sensor {_which}", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(335, "Crankshaft position sensor A", _C.DRIVABILITY, _S.HIGH)
_sensor_family(340, "Camshaft position sensor A (bank 1 or single sensor)", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(345, "Camshaft position sensor A (bank 2)", _C.DRIVABILITY, _S.MEDIUM)
_add("P0350", "Ignition coil primary/secondary circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0380", "Glow plug/heater circuit A malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0381", "Glow plug/heater indicator circuit malfunction", _C.DRIVABILITY, _S.LOW)
_sensor_family(385, "Crankshaft position sensor B", _C.DRIVABILITY, _S.HIGH)

# --- P04xx: auxiliary emission controls -------------------------------------------------------
_add("P0400", "Exhaust gas recirculation (EGR) flow malfunction", _C.EMISSIONS, _S.MEDIUM)
_add("P0401", "EGR flow insufficient", _C.EMISSIONS, _S.MEDIUM)
_add("P0402", "EGR flow excessive", _C.DRIVABILITY, _S.MEDIUM)
_add("P0403", "EGR control circuit malfunction", _C.EMISSIONS, _S.MEDIUM)
_add("P0404", "EGR control circuit range/performance", _C.EMISSIONS, _S.MEDIUM)
_add("P0405", "EGR sensor A circuit low", _C.EMISSIONS, _S.LOW)
_add("P0406", "EGR sensor A circuit high", _C.EMISSIONS, _S.LOW)
_add("P0407", "EGR sensor B circuit low", _C.EMISSIONS, _S.LOW)
_add("P0408", "EGR sensor B circuit high", _C.EMISSIONS, _S.LOW)
_add("P0410", "Secondary air injection system malfunction", _C.EMISSIONS, _S.LOW)
_add("P0411", "Secondary air injection system incorrect flow", _C.EMISSIONS, _S.LOW)
_add("P0412", "Secondary air injection switching valve A circuit malfunction", _C.EMISSIONS, _S.LOW)
_add("P0413", "Secondary air injection switching valve A circuit open", _C.EMISSIONS, _S.LOW)
_add("P0414", "Secondary air injection switching valve A circuit shorted", _C.EMISSIONS, _S.LOW)
_add("P0415", "Secondary air injection switching valve B circuit malfunction", _C.EMISSIONS, _S.LOW)
_add("P0416", "Secondary air injection switching valve B circuit open", _C.EMISSIONS, _S.LOW)
_add("P0417", "Secondary air injection switching valve B circuit shorted", _C.EMISSIONS, _S.LOW)
_add("P0418", "Secondary air injection pump relay A circuit malfunction", _C.EMISSIONS, _S.LOW)
_add("P0419", "Secondary air injection pump relay B circuit malfunction", _C.EMISSIONS, _S.LOW)
for _bank, _first in ((1, 420), (2, 430)):
    _add(f"P{_first:04d}", f"Catalyst system efficiency below threshold bank {_bank}", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 1:04d}", f"Warm-up catalyst efficiency below threshold bank {_bank}", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 2:04d}", f"Main catalyst efficiency below threshold bank {_bank}", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 3:04d}", f"Heated catalyst efficiency below threshold bank {_bank}", _C.EMISSIONS, _S.MEDIUM)
    _add(f"P{_first + 4:04d}", f"Heated catalyst temperature below threshold bank {_bank}", _C.EMISSIONS, _S.LOW)
    _add(f"P{_first + 5:04d}", f"Catalyst temperature sensor circuit malfunction bank {_bank}", _C.EMISSIONS, _S.LOW)
    _add(f"P{_first + 6:04d}", f"Catalyst temperature sensor range/performance bank {_bank}", _C.EMISSIONS, _S.LOW)
    _add(f"P{_first + 7:04d}", f"Catalyst temperature sensor low input bank {_bank}", _C.EMISSIONS, _S.LOW)
    _add(f"P{_first + 8:04d}", f"Catalyst temperature sensor high input bank {_bank}", _C.EMISSIONS, _S.LOW)
    _add(f"P{_first + 9:04d}", f"Catalyst heater control circuit malfunction bank {_bank}", _C.EMISSIONS, _S.LOW)
_add("P0440", "Evaporative emission (EVAP) system malfunction", _C.EMISSIONS, _S.LOW)
_add("P0441", "EVAP system incorrect purge flow", _C.EMISSIONS, _S.LOW)
_add("P0442", "EVAP system small leak detected", _C.EMISSIONS, _S.LOW)
_add("P0443", "EVAP purge control valve circuit malfunction", _C.EMISSIONS, _S.LOW)
_add("P0444", "EVAP purge control valve circuit open", _C.EMISSIONS, _S.LOW)
_add("P0445", "EVAP purge control valve circuit shorted", _C.EMISSIONS, _S.LOW)
_add("P0446", "EVAP vent control circuit malfunction", _C.EMISSIONS, _S.LOW)
_add("P0447", "EVAP vent control circuit open", _C.EMISSIONS, _S.LOW)
_add("P0448", "EVAP vent control circuit shorted", _C.EMISSIONS, _S.LOW)
_add("P0449", "EVAP vent valve/solenoid circuit malfunction", _C.EMISSIONS, _S.LOW)
_add("P0450", "EVAP pressure sensor malfunction", _C.EMISSIONS, _S.LOW)
_add("P0451", "EVAP pressure sensor range/performance", _C.EMISSIONS, _S.LOW)
_add("P0452", "EVAP pressure sensor low input", _C.EMISSIONS, _S.LOW)
_add("P0453", "EVAP pressure sensor high input", _C.EMISSIONS, _S.LOW)
_add("P0454", "EVAP pressure sensor intermittent", _C.EMISSIONS, _S.LOW)
_add("P0455", "EVAP system large leak detected (no purge flow or gross leak)", _C.EMISSIONS, _S.LOW)
_add("P0456", "EVAP system very small leak detected", _C.EMISSIONS, _S.LOW)
_add("P0457", "EVAP system leak detected (fuel cap loose or off)", _C.EMISSIONS, _S.LOW)
_sensor_family(460, "Fuel level sensor A", _C.BODY, _S.LOW)
_add("P0465", "EVAP purge flow sensor circuit malfunction", _C.EMISSIONS, _S.LOW)
_add("P0470", "Exhaust pressure sensor malfunction", _C.EMISSIONS, _S.LOW)
_add("P0480", "Cooling fan 1 control circuit malfunction", _C.SAFETY, _S.HIGH)
_add("P0481", "Cooling fan 2 control circuit malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0482", "Cooling fan 3 control circuit malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0483", "Cooling fan rationality check malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0484", "Cooling fan circuit over current", _C.SAFETY, _S.MEDIUM)
_add("P0485", "Cooling fan power/ground circuit malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0491", "Secondary air injection system bank 1", _C.EMISSIONS, _S.LOW)
_add("P0492", "Secondary air injection system bank 2", _C.EMISSIONS, _S.LOW)
_add("P0496", "EVAP system high purge flow", _C.EMISSIONS, _S.LOW)
_add("P0497", "EVAP system low purge flow", _C.EMISSIONS, _S.LOW)

# --- P05xx: vehicle speed, idle control and auxiliary inputs ----------------------------------
_add("P0500", "Vehicle speed sensor A malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0501", "Vehicle speed sensor A range/performance", _C.SAFETY, _S.MEDIUM)
_add("P0502", "Vehicle speed sensor A circuit low input", _C.SAFETY, _S.MEDIUM)
_add("P0503", "Vehicle speed sensor A intermittent/erratic/high", _C.SAFETY, _S.MEDIUM)
_add("P0505", "Idle air control system malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0506", "Idle control system RPM lower than expected", _C.DRIVABILITY, _S.MEDIUM)
_add("P0507", "Idle control system RPM higher than expected", _C.DRIVABILITY, _S.MEDIUM)
_add("P0508", "Idle air control system circuit low", _C.DRIVABILITY, _S.MEDIUM)
_add("P0509", "Idle air control system circuit high", _C.DRIVABILITY, _S.MEDIUM)
_add("P0510", "Closed throttle position switch malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0520", "Engine oil pressure sensor/switch circuit malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0521", "Engine oil pressure sensor/switch range/performance", _C.SAFETY, _S.HIGH)
_add("P0522", "Engine oil pressure sensor/switch low voltage", _C.SAFETY, _S.HIGH)
_add("P0523", "Engine oil pressure sensor/switch high voltage", _C.SAFETY, _S.MEDIUM)
_add("P0524", "Engine oil pressure too low", _C.SAFETY, _S.HIGH)
_add("P0530", "A/C refrigerant pressure sensor A circuit malfunction", _C.BODY, _S.LOW)
_add("P0531", "A/C refrigerant pressure sensor A range/performance", _C.BODY, _S.LOW)
_add("P0532", "A/C refrigerant pressure sensor A low input", _C.BODY, _S.LOW)
_add("P0533", "A/C refrigerant pressure sensor A high input", _C.BODY, _S.LOW)
_add("P0534", "A/C refrigerant charge loss", _C.BODY, _S.LOW)
_add("P0550", "Power steering pressure sensor circuit malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0551", "Power steering pressure sensor range/performance", _C.SAFETY, _S.MEDIUM)
_add("P0552", "Power steering pressure sensor low input", _C.SAFETY, _S.MEDIUM)
_add("P0553", "Power steering pressure sensor high input", _C.SAFETY, _S.MEDIUM)
_add("P0554", "Power steering pressure sensor intermittent", _C.SAFETY, _S.LOW)
_add("P0560", "System voltage malfunction", _C.ELECTRICAL, _S.MEDIUM)
_add("P0561", "System voltage unstable", _C.ELECTRICAL, _S.MEDIUM)
_add("P0562", "System voltage low", _C.ELECTRICAL, _S.MEDIUM)
_add("P0563", "System voltage high", _C.ELECTRICAL, _S.MEDIUM)
_add("P0565", "Cruise control on signal malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0566", "Cruise control off signal malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0567", "Cruise control resume signal malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0568", "Cruise control set signal malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0569", "Cruise control coast signal malfunction", _C.DRIVABILITY, _S.LOW)
_add("P0571", "Brake switch A circuit malfunction", _C.SAFETY, _S.MEDIUM)
_add("P0572", "Brake switch A circuit low", _C.SAFETY, _S.MEDIUM)
_add("P0573", "Brake switch A circuit high", _C.SAFETY, _S.MEDIUM)

# --- P06xx: computer and auxiliary outputs ----------------------------------------------------
_add("P0600", "Serial communication link malfunction", _C.NETWORK, _S.MEDIUM)
_add("P0601", "Control module internal memory checksum error", _C.ELECTRICAL, _S.HIGH)
_add("P0602", "Control module programming error", _C.ELECTRICAL, _S.HIGH)
_add("P0603", "Control module internal keep-alive memory (KAM) error", _C.ELECTRICAL, _S.MEDIUM)
_add("P0604", "Control module internal RAM error", _C.ELECTRICAL, _S.HIGH)
_add("P0605", "Control module internal ROM error", _C.ELECTRICAL, _S.HIGH)
_add("P0606", "Control module processor fault", _C.ELECTRICAL, _S.HIGH)
_add("P0607", "Control module performance", _C.ELECTRICAL, _S.HIGH)
_add("P0608", "Control module vehicle speed sensor output A malfunction", _C.ELECTRICAL, _S.MEDIUM)
_add("P0609", "Control module vehicle speed sensor output B malfunction", _C.ELECTRICAL, _S.MEDIUM)
_add("P0610", "Control module vehicle options error", _C.ELECTRICAL, _S.MEDIUM)
_add("P0615", "Starter relay circuit malfunction", _C.ELECTRICAL, _S.MEDIUM)
_add("P0616", "Starter relay circuit low", _C.ELECTRICAL, _S.MEDIUM)
_add("P0617", "Starter relay circuit high", _C.ELECTRICAL, _S.MEDIUM)
_add("P0620", "Generator (alternator) control circuit malfunction", _C.ELECTRICAL, _S.HIGH)
_add("P0621", "Generator lamp L control circuit malfunction", _C.ELECTRICAL, _S.MEDIUM)
_add("P0622", "Generator field F control circuit malfunction", _C.ELECTRICAL, _S.HIGH)
_add("P0627", "Fuel pump control circuit open", _C.DRIVABILITY, _S.HIGH)
_add("P0628", "Fuel pump control circuit low", _C.DRIVABILITY, _S.HIGH)
_add("P0629", "Fuel pump control circuit high", _C.DRIVABILITY, _S.HIGH)
_add("P0630", "VIN not programmed or mismatched (engine control module)", _C.ELECTRICAL, _S.MEDIUM)
_add("P0633", "Immobiliser key not programmed (engine control module)", _C.ELECTRICAL, _S.MEDIUM)
_add("P0641", "Sensor reference voltage A circuit open", _C.ELECTRICAL, _S.HIGH)
_add("P0645", "A/C clutch relay control circuit malfunction", _C.BODY, _S.LOW)
_add("P0650", "Malfunction indicator lamp (MIL) control circuit malfunction", _C.EMISSIONS, _S.MEDIUM)
_add("P0651", "Sensor reference voltage B circuit open", _C.ELECTRICAL, _S.HIGH)
_add("P0685", "Engine/powertrain control module power relay control circuit open", _C.ELECTRICAL, _S.HIGH)
_add("P0688", "Engine/powertrain control module power relay sense circuit open", _C.ELECTRICAL, _S.MEDIUM)
_add("P0691", "Cooling fan 1 control circuit low", _C.SAFETY, _S.MEDIUM)
_add("P0692", "Cooling fan 1 control circuit high", _C.SAFETY, _S.MEDIUM)

# --- P07xx: transmission ----------------------------------------------------------------------
_add("P0700", "Transmission control system malfunction (transmission module requests MIL)",
     _C.DRIVABILITY, _S.MEDIUM)
_add("P0701", "Transmission control system range/performance", _C.DRIVABILITY, _S.MEDIUM)
_add("P0702", "Transmission control system electrical", _C.DRIVABILITY, _S.MEDIUM)
_add("P0703", "Torque converter/brake switch B circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0704", "Clutch switch input circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_sensor_family(705, "Transmission range sensor A (PRNDL input)", _C.SAFETY, _S.MEDIUM)
_sensor_family(710, "Transmission fluid temperature sensor A", _C.DRIVABILITY, _S.MEDIUM)
_add("P0715", "Input/turbine speed sensor A circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0716", "Input/turbine speed sensor A circuit range/performance", _C.DRIVABILITY, _S.MEDIUM)
_add("P0717", "Input/turbine speed sensor A circuit no signal", _C.DRIVABILITY, _S.MEDIUM)
_add("P0718", "Input/turbine speed sensor A circuit intermittent", _C.DRIVABILITY, _S.LOW)
_add("P0719", "Torque converter/brake switch B circuit low", _C.DRIVABILITY, _S.MEDIUM)
_add("P0720", "Output speed sensor circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0721", "Output speed sensor circuit range/performance", _C.DRIVABILITY, _S.MEDIUM)
_add("P0722", "Output speed sensor circuit no signal", _C.DRIVABILITY, _S.MEDIUM)
_add("P0723", "Output speed sensor circuit intermittent", _C.DRIVABILITY, _S.LOW)
_add("P0724", "Torque converter/brake switch B circuit high", _C.DRIVABILITY, _S.MEDIUM)
_add("P0725", "Engine speed input circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0726", "Engine speed input circuit range/performance", _C.DRIVABILITY, _S.MEDIUM)
_add("P0727", "Engine speed input circuit no signal", _C.DRIVABILITY, _S.MEDIUM)
_add("P0728", "Engine speed input circuit intermittent", _C.DRIVABILITY, _S.LOW)
_add("P0729", "Gear 6 incorrect ratio", _C.DRIVABILITY, _S.MEDIUM)
_add("P0730", "Incorrect gear ratio", _C.DRIVABILITY, _S.MEDIUM)
for _gear in range(1, 6):
    _add(f"P{730 + _gear:04d}", f"Gear {_gear} incorrect ratio", _C.DRIVABILITY, _S.MEDIUM)
_add("P0736", "Reverse incorrect ratio", _C.DRIVABILITY, _S.MEDIUM)
_add("P0740", "Torque converter clutch circuit malfunction", _C.DRIVABILITY, _S.MEDIUM)
_add("P0741", "Torque converter clutch circuit performance or stuck off", _C.DRIVABILITY, _S.MEDIUM)
_add("P0742", "Torque converter clutch circuit stuck on", _C.DRIVABILITY, _S.MEDIUM)
_add("P0743", "Torque converter clutch circuit electrical", _C.DRIVABILITY, _S.MEDIUM)
_add("P0744", "Torque converter clutch circuit intermittent", _C.DRIVABILITY, _S.LOW)
for _first, _part in ((745, "Pressure control solenoid A"), (750, "Shift solenoid A"), (755, "Shift solenoid B"),
                      (760, "Shift solenoid C"), (765, "Shift solenoid D"), (770, "Shift solenoid E")):
    _sensor_family(_first, _part, _C.DRIVABILITY, _S.MEDIUM,
                   ("malfunction", "performance or stuck off", "stuck on", "electrical", "intermittent"))
_add("P0780", "Shift error", _C.DRIVABILITY, _S.MEDIUM)
for _k, _shift in enumerate(("1-2", "2-3", "3-4", "4-5"), start=1):
    _add(f"P{780 + _k:04d}", f"{_shift} shift malfunction", _C.DRIVABILITY, _S.MEDIUM)

# --- P2xxx: generic, second block -------------------------------------------------------------
for _code, _text, _cat, _sev in (
    ("P2096", "Post-catalyst fuel trim system too lean bank 1", _C.EMISSIONS, _S.MEDIUM),
    ("P2097", "Post-catalyst fuel trim system too rich bank 1", _C.EMISSIONS, _S.MEDIUM),
    ("P2098", "Post-catalyst fuel trim system too lean bank 2", _C.EMISSIONS, _S.MEDIUM),
    ("P2099", "Post-catalyst fuel trim system too rich bank 2", _C.EMISSIONS, _S.MEDIUM),
    ("P2100", "Throttle actuator control motor circuit/open", _C.SAFETY, _S.HIGH),
    ("P2101", "Throttle actuator control motor circuit range/performance", _C.SAFETY, _S.HIGH),
    ("P2106", "Throttle actuator control system: forced limited power", _C.SAFETY, _S.HIGH),
    ("P2110", "Throttle actuator control system: forced limited RPM", _C.SAFETY, _S.HIGH),
    ("P2111", "Throttle actuator control system stuck open", _C.SAFETY, _S.HIGH),
    ("P2112", "Throttle actuator control system stuck closed", _C.SAFETY, _S.HIGH),
    ("P2118", "Throttle actuator control motor current range/performance", _C.SAFETY, _S.HIGH),
    ("P2119", "Throttle actuator control throttle body range/performance", _C.SAFETY, _S.HIGH),
    ("P2122", "Throttle/pedal position sensor D circuit low input", _C.SAFETY, _S.HIGH),
    ("P2123", "Throttle/pedal position sensor D circuit high input", _C.SAFETY, _S.HIGH),
    ("P2127", "Throttle/pedal position sensor E circuit low input", _C.SAFETY, _S.HIGH),
    ("P2128", "Throttle/pedal position sensor E circuit high input", _C.SAFETY, _S.HIGH),
    ("P2135", "Throttle/pedal position sensor A/B voltage correlation", _C.SAFETY, _S.HIGH),
    ("P2138", "Throttle/pedal position sensor D/E voltage correlation", _C.SAFETY, _S.HIGH),
    ("P2181", "Cooling system performance", _C.SAFETY, _S.MEDIUM),
    ("P2187", "System too lean at idle bank 1", _C.DRIVABILITY, _S.MEDIUM),
    ("P2188", "System too rich at idle bank 1", _C.DRIVABILITY, _S.MEDIUM),
    ("P2189", "System too lean at idle bank 2", _C.DRIVABILITY, _S.MEDIUM),
    ("P2190", "System too rich at idle bank 2", _C.DRIVABILITY, _S.MEDIUM),
    ("P2195", "O2 sensor signal stuck lean (bank 1 sensor 1)", _C.EMISSIONS, _S.MEDIUM),
    ("P2196", "O2 sensor signal stuck rich (bank 1 sensor 1)", _C.EMISSIONS, _S.MEDIUM),
    ("P2197", "O2 sensor signal stuck lean (bank 2 sensor 1)", _C.EMISSIONS, _S.MEDIUM),
    ("P2198", "O2 sensor signal stuck rich (bank 2 sensor 1)", _C.EMISSIONS, _S.MEDIUM),
    ("P2270", "O2 sensor signal stuck lean (bank 1 sensor 2)", _C.EMISSIONS, _S.LOW),
    ("P2271", "O2 sensor signal stuck rich (bank 1 sensor 2)", _C.EMISSIONS, _S.LOW),
    ("P2272", "O2 sensor signal stuck lean (bank 2 sensor 2)", _C.EMISSIONS, _S.LOW),
    ("P2273", "O2 sensor signal stuck rich (bank 2 sensor 2)", _C.EMISSIONS, _S.LOW),
    ("P2279", "Intake air system leak", _C.DRIVABILITY, _S.MEDIUM),
    ("P2400", "EVAP leak detection pump control circuit/open", _C.EMISSIONS, _S.LOW),
    ("P2401", "EVAP leak detection pump control circuit low", _C.EMISSIONS, _S.LOW),
    ("P2402", "EVAP leak detection pump control circuit high", _C.EMISSIONS, _S.LOW),
    ("P2404", "EVAP leak detection pump sense circuit range/performance", _C.EMISSIONS, _S.LOW),
    ("P2418", "EVAP switching valve control circuit/open", _C.EMISSIONS, _S.LOW),
    ("P2419", "EVAP switching valve control circuit low", _C.EMISSIONS, _S.LOW),
    ("P2420", "EVAP switching valve control circuit high", _C.EMISSIONS, _S.LOW),
    ("P2440", "Secondary air injection switching valve stuck open bank 1", _C.EMISSIONS, _S.LOW),
    ("P2441", "Secondary air injection switching valve stuck closed bank 1", _C.EMISSIONS, _S.LOW),
    ("P2610", "Control module internal engine-off timer performance", _C.ELECTRICAL, _S.LOW),
    ("P2A00", "O2 sensor circuit range/performance (bank 1 sensor 1)", _C.EMISSIONS, _S.MEDIUM),
    ("P2A03", "O2 sensor circuit range/performance (bank 2 sensor 1)", _C.EMISSIONS, _S.MEDIUM),
):
    _add(_code, _text, _cat, _sev)

# --- P34xx: cylinder deactivation (eight codes per cylinder, numbered in decimal) --------------
_add("P3400", "Cylinder deactivation system bank 1", _C.DRIVABILITY, _S.MEDIUM)
for _cyl in range(1, 13):
    _base = 3401 + 8 * (_cyl - 1)
    for _off, _text in enumerate(("deactivation/intake valve control circuit/open",
                                  "deactivation/intake valve control performance",
                                  "deactivation/intake valve control circuit low",
                                  "deactivation/intake valve control circuit high",
                                  "exhaust valve control circuit/open", "exhaust valve control performance",
                                  "exhaust valve control circuit low", "exhaust valve control circuit high")):
        _add(f"P{_base + _off:04d}", f"Cylinder {_cyl} {_text}", _C.DRIVABILITY, _S.MEDIUM)
_add("P3497", "Cylinder deactivation system bank 2", _C.DRIVABILITY, _S.MEDIUM)

# --- U0xxx: network ---------------------------------------------------------------------------
for _code, _text, _cat, _sev in (
    ("U0001", "High-speed CAN communication bus", _C.NETWORK, _S.HIGH),
    ("U0002", "High-speed CAN communication bus performance", _C.NETWORK, _S.MEDIUM),
    ("U0073", "Control module communication bus A off", _C.NETWORK, _S.HIGH),
    ("U0074", "Control module communication bus B off", _C.NETWORK, _S.HIGH),
    ("U0100", "Lost communication with engine/powertrain control module A", _C.SAFETY, _S.HIGH),
    ("U0101", "Lost communication with transmission control module", _C.NETWORK, _S.HIGH),
    ("U0102", "Lost communication with transfer case control module", _C.NETWORK, _S.MEDIUM),
    ("U0103", "Lost communication with gear shift control module", _C.NETWORK, _S.MEDIUM),
    ("U0104", "Lost communication with cruise control module", _C.NETWORK, _S.LOW),
    ("U0105", "Lost communication with fuel injector control module", _C.NETWORK, _S.HIGH),
    ("U0107", "Lost communication with throttle actuator control module", _C.SAFETY, _S.HIGH),
    ("U0109", "Lost communication with fuel pump control module", _C.NETWORK, _S.HIGH),
    ("U0121", "Lost communication with anti-lock brake system (ABS) control module", _C.SAFETY, _S.HIGH),
    ("U0122", "Lost communication with vehicle dynamics control module", _C.SAFETY, _S.HIGH),
    ("U0123", "Lost communication with yaw rate sensor module", _C.SAFETY, _S.MEDIUM),
    ("U0124", "Lost communication with lateral acceleration sensor module", _C.SAFETY, _S.MEDIUM),
    ("U0126", "Lost communication with steering angle sensor module", _C.SAFETY, _S.MEDIUM),
    ("U0128", "Lost communication with park brake control module", _C.SAFETY, _S.MEDIUM),
    ("U0129", "Lost communication with brake system control module", _C.SAFETY, _S.HIGH),
    ("U0131", "Lost communication with power steering control module", _C.SAFETY, _S.HIGH),
    ("U0140", "Lost communication with body control module", _C.NETWORK, _S.MEDIUM),
    ("U0151", "Lost communication with restraints (airbag) control module", _C.SAFETY, _S.HIGH),
    ("U0155", "Lost communication with instrument panel cluster control module", _C.NETWORK, _S.MEDIUM),
    ("U0164", "Lost communication with HVAC control module", _C.BODY, _S.LOW),
    ("U0167", "Lost communication with vehicle immobiliser control module", _C.NETWORK, _S.MEDIUM),
    ("U0168", "Lost communication with vehicle security control module", _C.NETWORK, _S.MEDIUM),
    ("U0184", "Lost communication with radio", _C.BODY, _S.LOW),
    ("U0300", "Internal control module software incompatibility", _C.NETWORK, _S.MEDIUM),
    ("U0401", "Invalid data received from engine/powertrain control module A", _C.NETWORK, _S.MEDIUM),
    ("U0402", "Invalid data received from transmission control module", _C.NETWORK, _S.MEDIUM),
    ("U0415", "Invalid data received from anti-lock brake system (ABS) control module", _C.SAFETY, _S.MEDIUM),
    ("U0422", "Invalid data received from body control module", _C.NETWORK, _S.LOW),
    ("U0423", "Invalid data received from instrument panel cluster control module", _C.NETWORK, _S.LOW),
):
    _add(_code, _text, _cat, _sev)

# --- C0xxx / B0xxx: the few generic chassis and body codes ------------------------------------
for _code, _text, _cat, _sev in (
    ("C0035", "Left front wheel speed sensor circuit", _C.SAFETY, _S.HIGH),
    ("C0040", "Right front wheel speed sensor circuit", _C.SAFETY, _S.HIGH),
    ("C0045", "Left rear wheel speed sensor circuit", _C.SAFETY, _S.HIGH),
    ("C0050", "Right rear wheel speed sensor circuit", _C.SAFETY, _S.HIGH),
    ("C0110", "ABS pump motor circuit", _C.SAFETY, _S.HIGH),
    ("C0121", "ABS valve relay circuit", _C.SAFETY, _S.HIGH),
    ("B0001", "Driver frontal airbag stage 1 deployment control", _C.SAFETY, _S.HIGH),
    ("B0002", "Driver frontal airbag stage 2 deployment control", _C.SAFETY, _S.HIGH),
    ("B0010", "Passenger frontal airbag stage 1 deployment control", _C.SAFETY, _S.HIGH),
    ("B0011", "Passenger frontal airbag stage 2 deployment control", _C.SAFETY, _S.HIGH),
    ("B0020", "Left side airbag deployment control (row 1)", _C.SAFETY, _S.HIGH),
    ("B0028", "Right side airbag deployment control (row 1)", _C.SAFETY, _S.HIGH),
):
    _add(_code, _text, _cat, _sev)

# --- Family fallbacks: (system letter, range digit, sub-system hex digit) -> description ------
# Powertrain sub-systems of the generic blocks, per J2012's third-character assignment.
_P_SUBSYSTEMS: dict[str, tuple[str, Category, Severity]] = {
    "0": ("fuel and air metering and auxiliary emission controls", _C.EMISSIONS, _S.LOW),
    "1": ("fuel and air metering", _C.DRIVABILITY, _S.MEDIUM),
    "2": ("fuel and air metering (injector circuit)", _C.DRIVABILITY, _S.MEDIUM),
    "3": ("ignition system or misfire", _C.DRIVABILITY, _S.MEDIUM),
    "4": ("auxiliary emission controls", _C.EMISSIONS, _S.LOW),
    "5": ("vehicle speed control, idle control and auxiliary inputs", _C.DRIVABILITY, _S.MEDIUM),
    "6": ("computer and auxiliary outputs", _C.ELECTRICAL, _S.MEDIUM),
    "7": ("transmission", _C.DRIVABILITY, _S.MEDIUM),
    "8": ("transmission", _C.DRIVABILITY, _S.MEDIUM),
    "9": ("transmission", _C.DRIVABILITY, _S.MEDIUM),
    "A": ("hybrid propulsion", _C.DRIVABILITY, _S.MEDIUM),
    "B": ("hybrid propulsion", _C.DRIVABILITY, _S.MEDIUM),
    "C": ("hybrid propulsion", _C.DRIVABILITY, _S.MEDIUM),
    "D": ("reserved by ISO/SAE", _C.DRIVABILITY, _S.LOW),
    "E": ("reserved by ISO/SAE", _C.DRIVABILITY, _S.LOW),
    "F": ("reserved by ISO/SAE", _C.DRIVABILITY, _S.LOW),
}
_FUEL_AIR_AUX = ("fuel and air metering and auxiliary emission controls", _C.EMISSIONS, _S.LOW)
_P2_SUBSYSTEMS: dict[str, tuple[str, Category, Severity]] = {
    "0": _FUEL_AIR_AUX, "1": _FUEL_AIR_AUX, "2": _FUEL_AIR_AUX,
    "3": ("ignition system or misfire", _C.DRIVABILITY, _S.MEDIUM),
    "4": ("auxiliary emission controls", _C.EMISSIONS, _S.LOW),
    "5": ("auxiliary inputs", _C.DRIVABILITY, _S.MEDIUM),
    "6": ("computer and auxiliary outputs", _C.ELECTRICAL, _S.MEDIUM),
    "7": ("transmission", _C.DRIVABILITY, _S.MEDIUM),
    "8": ("reserved by ISO/SAE", _C.DRIVABILITY, _S.LOW),
    "9": _FUEL_AIR_AUX, "A": _FUEL_AIR_AUX,
}
_P3_SUBSYSTEMS: dict[str, tuple[str, Category, Severity]] = {
    "4": ("cylinder deactivation", _C.DRIVABILITY, _S.MEDIUM),
}
_U_SUBSYSTEMS: dict[str, tuple[str, Category, Severity]] = {
    "0": ("network electrical", _C.NETWORK, _S.MEDIUM),
    "1": ("network communication: lost communication with a module", _C.NETWORK, _S.MEDIUM),
    "2": ("network communication: lost communication with a module", _C.NETWORK, _S.MEDIUM),
    "3": ("network software: module software or configuration incompatibility", _C.NETWORK, _S.MEDIUM),
    "4": ("network data: invalid data received from a module", _C.NETWORK, _S.MEDIUM),
}
_B0_SUBSYSTEMS: dict[str, tuple[str, Category, Severity]] = {
    "0": ("restraint system (airbags, pretensioners)", _C.SAFETY, _S.HIGH),
}
_DEFAULT_BY_SYSTEM: dict[str, tuple[Category, Severity]] = {
    "P": (_C.DRIVABILITY, _S.MEDIUM), "C": (_C.SAFETY, _S.MEDIUM),
    "B": (_C.BODY, _S.LOW), "U": (_C.NETWORK, _S.MEDIUM),
}


def is_well_formed(code: str) -> bool:
    """Whether a code is one a Mode 03/07/0A response can carry: ``[PCBU][0-3][0-9A-F]{3}``."""
    return bool(WELL_FORMED_DTC.match(code.strip().upper()))


def is_generic(code: str) -> bool:
    """SAE-controlled (generic) ranges per J2012: P0, P2, P34-P39, C0, C3, B0, B3, U0, U3."""
    letter, digit, sub = code[0], code[1], code[2]
    if digit in "02":
        return True
    if digit == "3":
        return not (letter == "P" and sub in "0123")  # P30xx-P33xx are manufacturer-controlled
    return False


def _family(code: str) -> tuple[str, Category, Severity]:
    """Description from the system letter and sub-system digit, for codes without their own entry."""
    letter, digit, sub = code[0], code[1], code[2]
    system = SYSTEMS[letter]
    family = f"{letter}{digit}{sub}xx"
    category, severity = _DEFAULT_BY_SYSTEM[letter]
    if not is_generic(code):
        return f"{family}: manufacturer-specific {system} code (see the manufacturer's service information)", \
            category, severity
    table: dict[str, tuple[str, Category, Severity]] = {}
    if letter == "P":
        table = {"0": _P_SUBSYSTEMS, "2": _P2_SUBSYSTEMS, "3": _P3_SUBSYSTEMS}.get(digit, {})
    elif letter == "U":
        table = _U_SUBSYSTEMS
    elif letter == "B" and digit == "0":
        table = _B0_SUBSYSTEMS
    if sub in table:
        text, category, severity = table[sub]
        return f"{family}: {text}", category, severity
    return f"{family}: generic {system} code", category, severity


def describe_dtc(code: str) -> DtcInfo:
    """Description, system, category and severity of a trouble code; ValueError if it is not well formed.

    Codes are normalised (upper case, surrounding blanks removed) so ``"p0301 "`` and ``"P0301"`` agree.
    """
    normalised = code.strip().upper()
    if not WELL_FORMED_DTC.match(normalised):
        raise ValueError(f"{code!r} is not a well-formed OBD-II trouble code ([PCBU][0-3][0-9A-F]{{3}})")
    entry = _TABLE.get(normalised)
    known = entry is not None
    description, category, severity = entry if entry is not None else _family(normalised)
    return DtcInfo(normalised, description, SYSTEMS[normalised[0]], category, severity,
                   is_generic(normalised), known)


def describe_dtc_or_none(code: str) -> DtcInfo | None:
    """:func:`describe_dtc`, or None for a malformed code (the storage layer accepts ``[PCBU][0-9A-F]{4}``)."""
    try:
        return describe_dtc(code)
    except ValueError:
        return None


def known_codes() -> tuple[str, ...]:
    """Every code that has its own entry, sorted."""
    return tuple(sorted(_TABLE))
