"""The whole per-vehicle pipeline on the real logs in ``../shared/data``, as a Markdown report.

POLIDriving (7 sessions, 1 Hz OBD + GPS, Quito): per session trips, distance against the logger's
own ``distance_travelled``, events by kind, the pooled period score and the mean trip eco score.
VED sample (18 trips of 10 cars, Ann Arbor, ~0.5 Hz, GPS de-identified by the dataset's authors):
per vehicle the same, without a logger distance to compare with.

    python -m analytics.proof [../shared/data]   # prints the tables used in docs/analytics-proof.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .pipeline import SIGNALS, PipelineParams, analyse_vehicle
from .scores import period_score
from .trips import load_polidriving_arrays

EVENT_KINDS = ("harsh_acceleration", "harsh_braking", "harsh_cornering", "speeding", "over_revving", "idling")


def _matrix(arrays: dict[str, np.ndarray], n: int) -> np.ndarray:
    values = np.full((n, len(SIGNALS)), np.nan)
    for j, name in enumerate(SIGNALS):
        if name in arrays:
            values[:, j] = arrays[name]
    return values


def _summary(name: str, ts: np.ndarray, values: np.ndarray, params: PipelineParams) -> dict[str, object]:
    a = analyse_vehicle(ts, values, SIGNALS, params)
    trips = a.trips.assign(start_ms=a.trips["start_ts_ms"], end_ms=a.trips["end_ts_ms"])
    events = a.events.assign(trip_id=a.events["trip_index"])
    period = period_score(trips, events, params.scores, period_days=7.0) if len(trips) else None
    counts = a.events["kind"].value_counts().to_dict()
    km = float(a.trips["distance_m"].sum()) / 1000
    ecos = [e.score for e in a.eco_scores if e.score is not None]
    return {
        "drive": name, "samples": len(ts), "trips": len(a.trips), "km": round(km, 2),
        **{k: int(counts.get(k, 0)) for k in EVENT_KINDS},
        "events_per_100km": round(len(a.events) / km * 100, 1) if km else None,
        "score": None if period is None or period.score is None else round(period.score, 1),
        "eco": round(float(np.mean(ecos)), 1) if ecos else None,
        "battery": None if a.battery is None else a.battery.level,
    }


def polidriving_table(root: Path, params: PipelineParams | None = None) -> pd.DataFrame:
    p = params or PipelineParams()
    rows = []
    for path in sorted(root.glob("*/*/*_col.csv.gz")):
        arrays = load_polidriving_arrays(path)
        ts = arrays["ts_ms"]
        row = _summary(f"{path.parent.parent.name}/{path.name[:15]}", ts, _matrix(arrays, len(ts)), p)
        logger = arrays["logger_distance_km"]
        logger_km = float(np.nanmax(logger) - np.nanmin(logger)) if np.isfinite(logger).any() else float("nan")
        row["logger_km"] = round(logger_km, 2)
        row["error_pct"] = round((row["km"] - logger_km) / logger_km * 100, 2)  # type: ignore[operator]
        rows.append(row)
    return pd.DataFrame(rows)


def ved_table(path: Path, params: PipelineParams | None = None) -> pd.DataFrame:
    """Per VED vehicle: its trips in the sample concatenated in time (DayNum + trip-relative ms)."""
    p = params or PipelineParams()
    df = pd.read_csv(path)
    origin = pd.Timestamp("2017-11-01", tz="UTC").value // 1_000_000
    rows = []
    for veh, g in df.groupby("VehId"):
        trip_start = g.groupby("Trip")["DayNum"].transform("min") * 86_400_000
        ts = (origin + trip_start + g["Timestamp(ms)"]).to_numpy(dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        arrays = {
            "speed": g["Vehicle Speed[km/h]"].to_numpy(float), "rpm": g["Engine RPM[RPM]"].to_numpy(float),
            "maf": g["MAF[g/sec]"].to_numpy(float), "latitude": g["Latitude[deg]"].to_numpy(float),
            "longitude": g["Longitude[deg]"].to_numpy(float),
        }
        arrays = {k: v[order] for k, v in arrays.items()}
        rows.append(_summary(f"VED {veh}", ts[order], _matrix(arrays, len(ts)), p))
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub table (no extra dependency)."""
    cells = [[("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)) for v in row]
             for row in df.itertuples(index=False)]
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in cells)])


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "shared" / "data"
    if (root / "polidriving").is_dir():
        print(markdown(polidriving_table(root / "polidriving")))
    if (root / "ved_sample" / "ved_sample.csv").is_file():
        print()
        print(markdown(ved_table(root / "ved_sample" / "ved_sample.csv")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
