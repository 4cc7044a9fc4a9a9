"""Places a vehicle keeps returning to, which of them are home and work, and the trips between them.

Input is one vehicle's stays in time order (the frame :func:`analytics.staypoints.staypoints` or
:func:`analytics.staypoints.all_stays` returns: ``start_idx``, ``end_idx``, ``exit_idx``, ``started_ms``,
``finished_ms``, ``lat``, ``lon``, ``duration_s``). A *trip* is the movement between two consecutive stays: it leaves
the first at its exit fix (``started_ms`` = the stay's ``finished_ms``) and arrives at the second's first fix.

* **Places** — trackintel's ``generate_locations("dbscan", epsilon=100, num_samples=1, agg_level="user")``:
  scikit-learn DBSCAN on the haversine metric (``eps`` = 100 m / Earth radius, coordinates in radians, ball tree),
  per vehicle. With ``min_samples=1`` no stay is noise: a place is a chain of stays each within 100 m of another.
  The centre is the mean of the member stays (longitude circular, as trackintel's ``angle_centroid_multipoints``).
* **Home and work** — from dwell by local time of day, because a car's clock is its owner's routine.
  ``home`` = the place with the most dwell inside the night window (20:00–06:00 local, every day); ``work`` = the
  place, other than home, with the most dwell inside weekday working hours (Mon–Fri 09:00–17:00 local). Each needs
  minimum evidence (``PlaceParams``): dwell is measured as the overlap of each stay with the window (not its mean
  time, as trackintel's OSNA does, so a stay from 18:00 to 08:00 counts 10 h of night), and a label needs enough
  distinct nights / weekdays with at least an hour there, plus enough total dwell. This follows the two methods of
  trackintel's ``location_identifier`` (Chen & Poorthuis 2021): FREQ's "most time → home, next → work" and OSNA's
  time frames (rest 02–08, work 08–19, leisure 19–02 on weekdays), simplified to one night and one work window, and
  its prefilter's evidence idea (≥ 10 stays, ≥ 1 h and a ≥ 5 h span per location — written for phone traces;
  a car has far fewer stays, so we count nights and days instead). See
  /work/shared/docs/scoring-and-trajectory-conventions.md section C.
* **Frequent destinations** — places with at least ``frequent_min_visits`` stays, by visits then total dwell.
* **OD matrix** — trips counted per (origin place, destination place) with mean and median travel time.
* **Commutes** — an OD pair driven on at least ``commute_min_trips`` distinct weekdays (Mon–Fri) departing within
  ``commute_hour_window_h`` of the pair's most common local departure hour.

Vehicles park with the tracker off, so use :func:`analytics.staypoints.all_stays` (sliding stay points plus parking
gaps) as input; sliding stay points alone almost never contain a night.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sklearn.cluster import DBSCAN

from analytics.geo import EARTH_RADIUS_M

PLACE_LABELS = ("home", "work")
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, slots=True)
class PlaceParams:
    """Place clustering and labelling thresholds; per deployment overridable, sources in the comments."""

    epsilon_m: float = 100.0
    """DBSCAN radius (trackintel ``generate_locations`` epsilon=100 m; = our stay point radius)."""
    min_samples: int = 1
    """DBSCAN core size (trackintel num_samples=1, scikit-mobility ``cluster`` min_samples=1): no stay is noise."""
    night_start_h: int = 20
    """Home window start, local hour. scikit-mobility's ``home_location`` uses 22:00–07:00 and OSNA rest+leisure
    19:00–08:00; 20:00–06:00 sits between and excludes late commutes home."""
    night_end_h: int = 6
    """Home window end, local hour (exclusive)."""
    work_start_h: int = 9
    """Work window start, local hour, Monday to Friday (OSNA's work frame is 08–19; the core hours avoid the commute
    itself and a school run)."""
    work_end_h: int = 17
    """Work window end, local hour (exclusive)."""
    evidence_min_overlap_s: float = 3600.0
    """A night / weekday counts as evidence when the vehicle spent this long in the window at the place
    (trackintel's prefilter ``thresh_loc_time`` = 1 h)."""
    home_min_nights: int = 3
    """Distinct nights of evidence for ``home``: a week of ordinary use passes, a weekend away does not."""
    home_min_dwell_s: float = 5 * 3600.0
    """Total night dwell for ``home`` (trackintel's 5 h ``thresh_loc_period`` as an order of magnitude)."""
    work_min_days: int = 3
    """Distinct weekdays of evidence for ``work`` (a part-time job still shows three days a week)."""
    work_min_dwell_s: float = 5 * 3600.0
    """Total weekday working-hours dwell for ``work``."""
    frequent_min_visits: int = 2
    """Stays for a place to count as a frequent destination (a single visit is not a pattern)."""
    commute_min_trips: int = 3
    """Distinct weekdays an OD pair must be driven at about the same hour to be a commute."""
    commute_hour_window_h: int = 1
    """Departures within this many hours of the modal departure hour count toward the commute."""


@dataclass(frozen=True, slots=True)
class PlaceAnalysis:
    """Everything :func:`analyse_places` derives for one vehicle."""

    places: pd.DataFrame
    """place_id, lat, lon, radius_m, n_visits, total_dwell_s, mean_dwell_s, first_ms, last_ms, night_dwell_s,
    nights, work_dwell_s, workdays, label ("home" / "work" / "")."""
    stay_place: np.ndarray
    """place_id of each input stay (int64, aligned with the stays frame)."""
    trips: pd.DataFrame
    """See :func:`trips_between_stays`, with origin_place / dest_place filled."""
    od: pd.DataFrame
    """See :func:`od_matrix`."""
    frequent: pd.DataFrame
    """See :func:`frequent_destinations`."""
    commutes: pd.DataFrame
    """See :func:`commutes`."""


def _circular_mean_deg(values: np.ndarray) -> float:
    r = np.radians(values)
    return math.degrees(math.atan2(float(np.mean(np.sin(r))), float(np.mean(np.cos(r)))))


def _haversine_m_vec(lat1: np.ndarray, lon1: np.ndarray, lat2: float, lon2: float) -> np.ndarray:
    p1, p2 = np.radians(lat1), math.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def cluster_places(stays: pd.DataFrame,
                   params: PlaceParams = PlaceParams()) -> tuple[np.ndarray, pd.DataFrame]:
    """DBSCAN the stays of one vehicle into places: (place_id per stay, places frame).

    Place ids are 0.. in order of first visit, so they are stable when the same history is re-analysed.
    """
    cols = ["place_id", "lat", "lon", "radius_m", "n_visits", "total_dwell_s", "mean_dwell_s", "first_ms", "last_ms"]
    if len(stays) == 0:
        return np.zeros(0, dtype=np.int64), pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    coords = np.radians(stays[["lat", "lon"]].to_numpy(dtype=np.float64))
    db = DBSCAN(eps=params.epsilon_m / EARTH_RADIUS_M, min_samples=params.min_samples, metric="haversine",
                algorithm="ball_tree")
    raw = db.fit_predict(coords)
    order = np.argsort(stays["started_ms"].to_numpy(), kind="stable")
    remap: dict[int, int] = {}
    for i in order:
        if raw[i] >= 0 and raw[i] not in remap:
            remap[int(raw[i])] = len(remap)
    stay_place = np.array([remap.get(int(r), -1) for r in raw], dtype=np.int64)
    rows = []
    lat_all, lon_all = stays["lat"].to_numpy(), stays["lon"].to_numpy()
    dur_all = stays["duration_s"].to_numpy(dtype=np.float64)
    start_all, end_all = stays["started_ms"].to_numpy(), stays["finished_ms"].to_numpy()
    for pid in range(len(remap)):
        m = stay_place == pid
        c_lat, c_lon = float(np.mean(lat_all[m])), _circular_mean_deg(lon_all[m])
        rows.append({
            "place_id": pid, "lat": c_lat, "lon": c_lon,
            "radius_m": float(np.max(_haversine_m_vec(lat_all[m], lon_all[m], c_lat, c_lon))),
            "n_visits": int(m.sum()), "total_dwell_s": float(dur_all[m].sum()),
            "mean_dwell_s": float(dur_all[m].mean()),
            "first_ms": int(start_all[m].min()), "last_ms": int(end_all[m].max()),
        })
    return stay_place, pd.DataFrame(rows, columns=cols)


def trips_between_stays(stays: pd.DataFrame, stay_place: np.ndarray | None = None) -> pd.DataFrame:
    """One trip per pair of consecutive stays (a trailing stay without an exit fix ends the list).

    Columns: trip_id, origin_stay, dest_stay (row positions in ``stays``), origin_place, dest_place (-1 without
    ``stay_place``), start_idx (the origin's exit fix), end_idx (the destination's first fix), started_ms,
    finished_ms, travel_s, start_lat, start_lon, end_lat, end_lon (the two stays' positions).
    """
    n = len(stays)
    o = np.arange(max(n - 1, 0))
    d = o + 1
    exit_idx = stays["exit_idx"].to_numpy()[o] if n else np.zeros(0, dtype=np.int64)
    ok = exit_idx >= 0
    o, d = o[ok], d[ok]
    places = stay_place if stay_place is not None else np.full(n, -1, dtype=np.int64)
    started = stays["finished_ms"].to_numpy()[o]
    finished = stays["started_ms"].to_numpy()[d]
    lat, lon = stays["lat"].to_numpy(), stays["lon"].to_numpy()
    return pd.DataFrame({
        "trip_id": np.arange(len(o), dtype=np.int64),
        "origin_stay": o, "dest_stay": d,
        "origin_place": np.asarray(places, dtype=np.int64)[o], "dest_place": np.asarray(places, dtype=np.int64)[d],
        "start_idx": stays["exit_idx"].to_numpy()[o], "end_idx": stays["start_idx"].to_numpy()[d],
        "started_ms": started, "finished_ms": finished, "travel_s": (finished - started) / 1000.0,
        "start_lat": lat[o], "start_lon": lon[o], "end_lat": lat[d], "end_lon": lon[d],
    })


def _window_overlaps(start_ms: int, end_ms: int, tz: ZoneInfo,
                     params: PlaceParams) -> tuple[dict[dt.date, float], dict[dt.date, float]]:
    """Seconds of [start, end) inside each night window (keyed by the evening's date) and each weekday work window.

    Windows are built in local wall-clock time, so a 20:00 start stays 20:00 across a DST change.
    """
    start = dt.datetime.fromtimestamp(start_ms / 1000, tz)
    end = dt.datetime.fromtimestamp(end_ms / 1000, tz)
    nights: dict[dt.date, float] = {}
    work: dict[dt.date, float] = {}
    day = start.date() - dt.timedelta(days=1)
    while day <= end.date():
        n0 = dt.datetime.combine(day, dt.time(params.night_start_h), tz)
        n1 = dt.datetime.combine(day + dt.timedelta(days=1 if params.night_end_h <= params.night_start_h else 0),
                                 dt.time(params.night_end_h), tz)
        s = (min(end, n1) - max(start, n0)).total_seconds()
        if s > 0:
            nights[day] = nights.get(day, 0.0) + s
        if day.weekday() < 5:
            w0 = dt.datetime.combine(day, dt.time(params.work_start_h), tz)
            w1 = dt.datetime.combine(day, dt.time(params.work_end_h), tz)
            s = (min(end, w1) - max(start, w0)).total_seconds()
            if s > 0:
                work[day] = work.get(day, 0.0) + s
        day += dt.timedelta(days=1)
    return nights, work


def label_home_work(stays: pd.DataFrame, stay_place: np.ndarray, places: pd.DataFrame, tz: str,
                    params: PlaceParams = PlaceParams()) -> pd.DataFrame:
    """``places`` with night/work dwell evidence and a ``label`` column (see the module docstring for the rule).

    ``tz`` is the vehicle's IANA time zone (e.g. "America/Guayaquil"); windows are local wall-clock time.
    """
    zone = ZoneInfo(tz)
    n_places = len(places)
    night_by_day: list[dict[dt.date, float]] = [{} for _ in range(n_places)]
    work_by_day: list[dict[dt.date, float]] = [{} for _ in range(n_places)]
    for pid, s0, s1 in zip(stay_place, stays["started_ms"].to_numpy(), stays["finished_ms"].to_numpy(), strict=True):
        if pid < 0:
            continue
        nights, work = _window_overlaps(int(s0), int(s1), zone, params)
        for day, sec in nights.items():
            night_by_day[pid][day] = night_by_day[pid].get(day, 0.0) + sec
        for day, sec in work.items():
            work_by_day[pid][day] = work_by_day[pid].get(day, 0.0) + sec
    out = places.copy()
    out["night_dwell_s"] = [sum(d.values()) for d in night_by_day]
    out["nights"] = [sum(v >= params.evidence_min_overlap_s for v in d.values()) for d in night_by_day]
    out["work_dwell_s"] = [sum(d.values()) for d in work_by_day]
    out["workdays"] = [sum(v >= params.evidence_min_overlap_s for v in d.values()) for d in work_by_day]
    out["label"] = ""
    home_ok = (out["nights"] >= params.home_min_nights) & (out["night_dwell_s"] >= params.home_min_dwell_s)
    home = -1
    if home_ok.any():
        home = int(out.loc[home_ok, "night_dwell_s"].idxmax())
        out.loc[home, "label"] = "home"
    work_ok = (out["workdays"] >= params.work_min_days) & (out["work_dwell_s"] >= params.work_min_dwell_s)
    work_ok &= out.index != home
    if work_ok.any():
        out.loc[int(out.loc[work_ok, "work_dwell_s"].idxmax()), "label"] = "work"
    return out


def frequent_destinations(places: pd.DataFrame,
                          params: PlaceParams = PlaceParams()) -> pd.DataFrame:
    """Places visited at least ``frequent_min_visits`` times, most visited first (ties: more dwell first)."""
    keep = places[places["n_visits"] >= params.frequent_min_visits]
    return keep.sort_values(["n_visits", "total_dwell_s"], ascending=False, kind="stable").reset_index(drop=True)


def od_matrix(trips: pd.DataFrame) -> pd.DataFrame:
    """Trips per (origin_place, dest_place) with mean and median travel time in s, long form (one row per pair,
    ready for a table); pivot with ``.pivot(index="origin_place", columns="dest_place", values="n_trips")``.

    Trips from a place back to itself (a loop) are kept: they are real trips, and dropping them would hide errands.
    """
    known = trips[(trips["origin_place"] >= 0) & (trips["dest_place"] >= 0)]
    if len(known) == 0:
        return pd.DataFrame({"origin_place": pd.Series(dtype="int64"), "dest_place": pd.Series(dtype="int64"),
                             "n_trips": pd.Series(dtype="int64"), "mean_travel_s": pd.Series(dtype="float64"),
                             "median_travel_s": pd.Series(dtype="float64")})
    g = known.groupby(["origin_place", "dest_place"], sort=True)["travel_s"]
    return g.agg(n_trips="count", mean_travel_s="mean", median_travel_s="median").reset_index()


def commutes(trips: pd.DataFrame, tz: str, places: pd.DataFrame | None = None,
             params: PlaceParams = PlaceParams()) -> pd.DataFrame:
    """Recurring weekday OD pairs at about the same departure hour.

    Columns: origin_place, dest_place, departure_hour (modal local hour), n_trips, n_days, weekdays ("Mon,Tue,..."),
    mean_travel_s, and origin_label / dest_label when ``places`` (with ``label``) is given.
    """
    cols = ["origin_place", "dest_place", "departure_hour", "n_trips", "n_days", "weekdays", "mean_travel_s"]
    zone = ZoneInfo(tz)
    rows = []
    known = trips[(trips["origin_place"] >= 0) & (trips["dest_place"] >= 0)
                  & (trips["origin_place"] != trips["dest_place"])]
    local = [dt.datetime.fromtimestamp(ms / 1000, zone) for ms in known["started_ms"].to_numpy()]
    known = known.assign(_hour=[t.hour for t in local], _day=[t.date() for t in local],
                         _wd=[t.weekday() for t in local])
    known = known[known["_wd"] < 5]
    for (o, d), g in known.groupby(["origin_place", "dest_place"], sort=True):
        counts = g["_hour"].value_counts()
        best_hour, best_n = -1, -1
        for h in sorted(counts.index):  # the hour whose window holds most departures; ties: the earliest
            n = int(counts[(counts.index >= h - params.commute_hour_window_h)
                           & (counts.index <= h + params.commute_hour_window_h)].sum())
            if n > best_n:
                best_hour, best_n = int(h), n
        near = g[(g["_hour"] - best_hour).abs() <= params.commute_hour_window_h]
        n_days = near["_day"].nunique()
        if n_days < params.commute_min_trips:
            continue
        rows.append({"origin_place": int(o), "dest_place": int(d), "departure_hour": best_hour,
                     "n_trips": len(near), "n_days": int(n_days),
                     "weekdays": ",".join(WEEKDAY_NAMES[w] for w in sorted(set(near["_wd"]))),
                     "mean_travel_s": float(near["travel_s"].mean())})
    out = pd.DataFrame(rows, columns=cols)
    if places is not None and "label" in places.columns:
        label = dict(zip(places["place_id"], places["label"], strict=True))
        out["origin_label"] = [label.get(p, "") for p in out["origin_place"]]
        out["dest_label"] = [label.get(p, "") for p in out["dest_place"]]
    return out.sort_values(["n_days", "n_trips"], ascending=False, kind="stable").reset_index(drop=True)


def analyse_places(stays: pd.DataFrame, tz: str,
                   params: PlaceParams = PlaceParams()) -> PlaceAnalysis:
    """Places, home/work, trips, OD matrix, frequent destinations and commutes of one vehicle's stays."""
    stays = stays.sort_values("started_ms", kind="stable").reset_index(drop=True)
    stay_place, places = cluster_places(stays, params)
    places = label_home_work(stays, stay_place, places, tz, params)
    trips = trips_between_stays(stays, stay_place)
    return PlaceAnalysis(places=places, stay_place=stay_place, trips=trips, od=od_matrix(trips),
                         frequent=frequent_destinations(places, params),
                         commutes=commutes(trips, tz, places, params))
