"""Realistic 1 Hz agent samples for the benchmarks: real POLIDriving drives, 10 OBD signals + a GPS fix.

The recorded drives carry speed, RPM, throttle, coolant temperature, battery voltage, engine load and
position. Four more OBD signals a typical car answers are derived from those with the usual physics,
so their values move the way real ones do (not noise): MAF from RPM and load (speed-density with a
1.6 l engine), fuel rate from MAF (stoichiometric petrol), intake manifold pressure from load and the
barometric pressure at Quito's altitude, intake air temperature warming slowly with coolant. GPS
speed and course come from consecutive fixes; HDOP and satellites vary slowly like a real receiver's.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from device_agent.replay import derive_gps_motion, read_polidriving
from vinsight.contract import Sample

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VINSIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def drive_files() -> list[Path]:
    files = sorted(SHARED.glob("polidriving/*/*/*_col.csv.gz"))
    return files or sorted((ROOT / "tests" / "fixtures" / "polidriving").glob("*.csv.gz"))


def realistic_samples(limit: int | None = None, files: list[Path] | None = None) -> list[Sample]:
    samples: list[Sample] = []
    for path in files or drive_files():
        rows = list(read_polidriving(path))
        derive_gps_motion(rows)
        for i, row in enumerate(rows):
            v = dict(row.values)
            rpm, load = v.get("rpm"), v.get("engine_load")
            if rpm is None or load is None or "latitude" not in v:
                continue
            maf = round(1.6 * rpm / 120 * (load / 100) * 1.06, 2)  # g/s, speed-density estimate
            v["maf"] = maf
            v["fuel_rate"] = round(maf / 14.7 / 745 * 3600, 1)  # L/h
            v["intake_pressure"] = float(round(20 + load * 0.53))  # kPa, ~73 kPa baro at 2,800 m
            v["intake_temp"] = float(round(18 + 0.1 * v.get("coolant_temp", 80)))
            v["hdop"] = round(0.8 + 0.1 * math.sin(i / 300), 2)
            v["satellites"] = float(9 + round(math.sin(i / 500)))
            v["fix_mode"] = 3.0
            samples.append(Sample(len(samples), row.ts_ms, v, {}))
            if limit is not None and len(samples) >= limit:
                return samples
    return samples
