"""Replay of a recorded drive through the agent's own pipeline, in place of a car.

Reads a POLIDriving consolidated log (``<session>/<session>_col.csv[.gz]``: one row per second, the
date in the folder/file name, local time of Quito, UTC-5) and delivers its rows to a
:class:`~device_agent.sink.ReadingSink` exactly as the OBD and GPS sources would, so recorder, outbox,
publisher and everything in the cloud run unchanged. Used by the demo and the tests.

Timing: ``speed`` is the playback factor (1 = real time, 10 = ten times faster, 0 = as fast as
possible). With ``shift_to_now`` the timestamps are moved so that the drive ends no later than the
moment it finishes playing: samples keep their real 1 s spacing, and no timestamp is ever in the
future, which the cloud would reject. Without it the original times are kept (for analysing the
real data).

Where the log has no GPS speed or course (POLIDriving has neither), they are derived from
consecutive fixes, as a GNSS receiver would report them.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .sink import ReadingSink

# POLIDriving column -> catalog signal (units already match the catalog).
POLIDRIVING_COLUMNS: dict[str, str] = {
    "speed": "speed",
    "rpm": "rpm",
    "throttle_position": "throttle_pos",
    "engine_temperature": "coolant_temp",
    "system_voltage": "battery_voltage",
    "engine_load_value": "engine_load",
    "barometric_pressure": "barometric_pressure",
    "altitude": "altitude",
    "latitude": "latitude",
    "longitude": "longitude",
}
# Kept as extras: the logger's own odometer (analytics checks distances against it) and the
# phone app's acceleration estimate.
POLIDRIVING_EXTRAS: dict[str, str] = {"distance_travelled": "logger_distance_km", "acceleration": "app_accel_ms2"}
QUITO_UTC_OFFSET_H = -5.0
EARTH_RADIUS_M = 6_371_008.8


@dataclass(slots=True)
class ReplayRow:
    ts_ms: int
    values: dict[str, float]
    extras: dict[str, float]


def _float(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def session_start(path: Path) -> dt.date:
    match = re.search(r"(\d{8})_\d{6}", path.name)
    if not match:
        raise ValueError(f"{path.name}: no YYYYMMDD_HHMMSS session stamp in the file name")
    return dt.datetime.strptime(match.group(1), "%Y%m%d").date()


def read_polidriving(path: Path, utc_offset_h: float = QUITO_UTC_OFFSET_H) -> Iterator[ReplayRow]:
    """Rows of a POLIDriving log with UTC timestamps; empty cells stay absent."""
    day = session_start(path)
    tz = dt.timezone(dt.timedelta(hours=utc_offset_h))
    previous_time: dt.time | None = None
    with _open_text(path) as fh:
        for row in csv.DictReader(fh):
            try:
                t = dt.time.fromisoformat(row["time"])
            except (KeyError, ValueError):
                continue
            if previous_time is not None and t < previous_time:
                day += dt.timedelta(days=1)  # the drive crossed midnight
            previous_time = t
            stamp = dt.datetime.combine(day, t, tzinfo=tz)
            values = {sig: v for col, sig in POLIDRIVING_COLUMNS.items() if (v := _float(row.get(col))) is not None}
            extras = {name: v for col, name in POLIDRIVING_EXTRAS.items() if (v := _float(row.get(col))) is not None}
            yield ReplayRow(int(stamp.timestamp() * 1000), values, extras)


def derive_gps_motion(rows: list[ReplayRow]) -> None:
    """Fill gps_speed (km/h) and course (deg) from consecutive fixes where the log lacks them."""
    last: tuple[int, float, float] | None = None
    for row in rows:
        lat, lon = row.values.get("latitude"), row.values.get("longitude")
        if lat is None or lon is None:
            continue
        if last is not None and "gps_speed" not in row.values:
            t0, lat0, lon0 = last
            dt_s = (row.ts_ms - t0) / 1000
            if 0 < dt_s <= 5:
                p0, p1 = math.radians(lat0), math.radians(lat)
                dl = math.radians(lon - lon0)
                a = math.sin((p1 - p0) / 2) ** 2 + math.cos(p0) * math.cos(p1) * math.sin(dl / 2) ** 2
                dist = 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))
                speed_kmh = dist / dt_s * 3.6
                if speed_kmh <= 500:
                    row.values["gps_speed"] = round(speed_kmh, 2)
                    if dist > 1.0:
                        y = math.sin(dl) * math.cos(p1)
                        x = math.cos(p0) * math.sin(p1) - math.sin(p0) * math.cos(p1) * math.cos(dl)
                        row.values["course"] = round(math.degrees(math.atan2(y, x)) % 360, 1)
        last = (row.ts_ms, lat, lon)


class ReplaySource:
    """Plays a recorded drive into a sink; ``run`` returns when the drive ends or ``stop`` is set."""

    def __init__(self, path: Path, sink: ReadingSink, *, speed: float = 1.0, shift_to_now: bool = True,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 on_row: Callable[[int], None] | None = None) -> None:
        self.path = Path(path)
        self.sink = sink
        self.speed = speed
        self.shift_to_now = shift_to_now
        self.clock_ms = clock_ms
        self.on_row = on_row
        self.rows_played = 0
        self.rows_total = 0
        self.finished = threading.Event()

    def load(self) -> list[ReplayRow]:
        rows = list(read_polidriving(self.path))
        derive_gps_motion(rows)
        return rows

    def run(self, stop: threading.Event) -> None:
        rows = self.load()
        self.rows_total = len(rows)
        if not rows:
            self.finished.set()
            return
        first, last = rows[0].ts_ms, rows[-1].ts_ms
        duration_ms = last - first
        wall_start = time.monotonic()
        now = self.clock_ms()
        if self.shift_to_now:
            play_ms = duration_ms / self.speed if self.speed > 0 else 0
            shift = now - duration_ms + play_ms - first
        else:
            shift = 0
        for row in rows:
            if stop.is_set():
                break
            if self.speed > 0:
                due = wall_start + (row.ts_ms - first) / 1000 / self.speed
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            ts = int(row.ts_ms + shift)
            for name, value in row.values.items():
                self.sink.reading(name, value, ts)
            for name, value in row.extras.items():
                self.sink.extra(name, value, ts)
            self.rows_played += 1
            if self.on_row is not None:
                self.on_row(ts)
        self.finished.set()

    def status(self) -> dict[str, object]:
        return {"source": "replay", "file": self.path.name, "rows_played": self.rows_played,
                "rows_total": self.rows_total}
