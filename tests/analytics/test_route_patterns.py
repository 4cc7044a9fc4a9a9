"""Stay points, places and routes: kernels against their references, trackintel parity, and behaviour on scenes
whose answer is known (a synthetic week, near-identical and different drives)."""

from __future__ import annotations

import datetime as dt
import math
import warnings
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import places as pl
from analytics import routes as rt
from analytics import staypoints as sp
from device_agent.replay import read_polidriving

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "polidriving" / "20231222_134710_col.csv.gz"
M_PER_DEG = 111_195.0
QUITO = "America/Guayaquil"


def offset(lat0: float, lon0: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat0 + north_m / M_PER_DEG, lon0 + east_m / (M_PER_DEG * math.cos(math.radians(lat0)))


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = list(read_polidriving(path))
    return (np.array([r.ts_ms for r in rows], dtype=np.int64),
            np.array([r.values.get("latitude", np.nan) for r in rows]),
            np.array([r.values.get("longitude", np.nan) for r in rows]))


# --------------------------------------------------------------------------------------------------------------------
# stay points: kernel vs reference

KINDS = ("still", "still", "still", "still", "still", "walk", "jump", "dup", "gap", "nan")


@st.composite
def tracks(draw: st.DrawFn) -> tuple[list[int], list[float], list[float]]:
    """Fixes jittering up to 60 m around a centre that now and then walks 60 m or jumps 400 m, 0–2 min apart, with
    gaps over 15 min, exact duplicates and missing positions: stays of around 5 min and 100 m are common."""
    dt_ms = st.one_of(st.sampled_from([1_000, 30_000, 60_000, 90_000, 120_000]), st.integers(0, 120_000))
    steps = draw(st.lists(st.tuples(st.integers(0, len(KINDS) - 1), dt_ms, st.floats(-1.0, 1.0),
                                    st.floats(-1.0, 1.0)), min_size=draw(st.integers(0, 40)), max_size=100))
    t, c_lat, c_lon = 1_700_000_000_000, -0.2, -78.5
    ts_l: list[int] = []
    lat_l: list[float] = []
    lon_l: list[float] = []
    for k, dt_ms, north, east in steps:
        kind = KINDS[k]
        if kind == "dup" and ts_l:
            ts_l.append(ts_l[-1])
            lat_l.append(lat_l[-1])
            lon_l.append(lon_l[-1])
            continue
        t += 1_000_000 + 10 * dt_ms if kind == "gap" else dt_ms
        if kind in ("walk", "jump"):
            step = 60.0 if kind == "walk" else 400.0
            c_lat, c_lon = offset(c_lat, c_lon, north * step, east * step)
            lat, lon = c_lat, c_lon
        else:
            lat, lon = offset(c_lat, c_lon, north * 60.0, east * 60.0)
        ts_l.append(t)
        lat_l.append(math.nan if kind == "nan" else lat)
        lon_l.append(lon)
    return ts_l, lat_l, lon_l


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tracks(), st.booleans(), st.booleans(), st.sampled_from([25.0, 100.0]))
def test_staypoints_match_reference(track, include_last: bool, exclude_dups: bool, dist: float) -> None:
    ts, lat, lon = track
    params = sp.StaypointParams(dist_threshold_m=dist, include_last=include_last, exclude_duplicate_pfs=exclude_dups)
    keep = sp.position_fix_index_reference(ts, lat, lon, exclude_dups)
    assert list(sp.position_fix_index(np.array(ts, dtype=np.int64), np.array(lat), np.array(lon),
                                      exclude_dups)) == keep
    c_ts, c_lat, c_lon = [ts[i] for i in keep], [lat[i] for i in keep], [lon[i] for i in keep]
    expected = sp.sliding_staypoints_reference(c_ts, c_lat, c_lon, dist, 300_000, 900_000, include_last)
    got = sp.staypoints(np.array(ts, dtype=np.int64), np.array(lat), np.array(lon), params)
    assert len(got) == len(expected)
    for row, (a, b, fin, m_lat, m_lon) in zip(got.itertuples(), expected, strict=True):
        assert (row.start_idx, row.end_idx, row.finished_ms) == (keep[a], keep[b - 1], fin)
        assert row.exit_idx == (keep[b] if b < len(keep) else -1)
        assert row.started_ms == c_ts[a] and row.n_fixes == b - a
        assert row.lat == pytest.approx(m_lat, abs=1e-12) and row.lon == pytest.approx(m_lon, abs=1e-12)
        assert row.duration_s >= 300.0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tracks(), st.floats(60.0, 3600.0), st.floats(10.0, 300.0))
def test_gap_stays_match_reference(track, min_gap_s: float, jump: float) -> None:
    ts, lat, lon = track
    keep = sp.position_fix_index_reference(ts, lat, lon, True)
    c_ts, c_lat, c_lon = [ts[i] for i in keep], [lat[i] for i in keep], [lon[i] for i in keep]
    expected = sp.gap_stays_reference(c_ts, c_lat, c_lon, round(min_gap_s * 1000), jump)
    got = sp.gap_stays(np.array(ts, dtype=np.int64), np.array(lat), np.array(lon), sp.GapStayParams(min_gap_s, jump))
    assert list(got["start_idx"]) == [keep[i] for i in expected]
    assert list(got["end_idx"]) == [keep[i + 1] for i in expected]


def test_staypoint_semantics_by_hand() -> None:
    """Anchor, >= thresholds, exit fix as finish time, gap reset, include_last — on a hand-built track."""
    lat0, lon0 = -0.2, -78.5
    pts = [(0, 0.0), (60, 10.0), (120, 20.0), (300, 30.0), (301, 150.0),  # stay 0..3 (301 s >= 5 min), exit at 4
           (310, 400.0), (320, 410.0),  # too short
           (2000, 410.0), (2400, 420.0), (2700, 430.0)]  # > 15 min gap resets; trailing stay of 700 s
    ts = np.array([t * 1000 for t, _ in pts], dtype=np.int64)
    lat = np.array([offset(lat0, lon0, 0.0, e)[0] for _, e in pts])
    lon = np.array([offset(lat0, lon0, 0.0, e)[1] for _, e in pts])
    got = sp.staypoints(ts, lat, lon)
    assert list(zip(got.start_idx, got.end_idx, got.exit_idx, strict=True)) == [(0, 3, 4)]
    assert got.finished_ms.iat[0] == 301_000 and got.duration_s.iat[0] == 301.0
    last = sp.staypoints(ts, lat, lon, sp.StaypointParams(include_last=True))
    assert list(zip(last.start_idx, last.end_idx, last.exit_idx, strict=True)) == [(0, 3, 4), (7, 9, -1)]
    assert last.finished_ms.iat[1] == 2_700_000


def test_unsorted_input_and_empty() -> None:
    assert len(sp.staypoints(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))) == 0
    ts = np.array([600_000, 0, 700_000, 300_000], dtype=np.int64)
    lat = np.array([-0.2, -0.2, -0.19, -0.2])
    lon = np.full(4, -78.5)
    got = sp.staypoints(ts, lat, lon)
    assert list(zip(got.start_idx, got.end_idx, got.exit_idx, strict=True)) == [(1, 0, 2)]


# --------------------------------------------------------------------------------------------------------------------
# stay points: parity with trackintel on real fixes

def _trackintel_spans(ts: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> list[tuple[int, int]]:
    ti = pytest.importorskip("trackintel")
    import geopandas as gpd

    gdf = gpd.GeoDataFrame({"user_id": np.ones(len(ts), dtype=np.int64),
                            "tracked_at": pd.to_datetime(ts, unit="ms", utc=True)},
                           geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326").rename_geometry("geom")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pfs, _ = ti.Positionfixes(gdf).generate_staypoints(method="sliding", dist_threshold=100, time_threshold=5,
                                                            gap_threshold=15, include_last=False)
    g = pfs.dropna(subset=["staypoint_id"]).reset_index().groupby("staypoint_id")["index"].agg(["min", "max"])
    return [(int(a), int(b)) for a, b in g.itertuples(index=False)]


def _with_parked_phases(ts: np.ndarray, lat: np.ndarray, lon: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """The real drive cut in three, each piece preceded by a jittery parked phase (stays near the thresholds)."""
    rng = np.random.default_rng(seed)
    ok = ~np.isnan(lat)
    ts, lat, lon = ts[ok], lat[ok], lon[ok]
    parts_t, parts_la, parts_lo = [], [], []
    t = int(ts[0])
    for piece in np.array_split(np.arange(len(ts)), 3):
        n = int(rng.integers(200, 900))
        jit = rng.normal(0, 12.0, size=(n, 2))
        parts_t.append(t + 1000 * np.arange(n))
        parts_la.append(lat[piece[0]] + jit[:, 0] / M_PER_DEG)
        parts_lo.append(lon[piece[0]] + jit[:, 1] / M_PER_DEG)
        t += 1000 * n
        parts_t.append(t + ts[piece] - ts[piece[0]])
        parts_la.append(lat[piece])
        parts_lo.append(lon[piece])
        t += int(ts[piece[-1]] - ts[piece[0]]) + 1000
    return np.concatenate(parts_t), np.concatenate(parts_la), np.concatenate(parts_lo)


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_trackintel_on_fixture_excerpt(seed: int) -> None:
    ts, lat, lon = _with_parked_phases(*load(FIXTURE), seed)
    expected = _trackintel_spans(ts, lat, lon)
    got = sp.staypoints(ts, lat, lon)
    assert expected and list(zip(got.start_idx, got.end_idx, strict=True)) == expected


def test_matches_trackintel_on_real_stop(shared_data: Path) -> None:
    """andres 20231222 holds the one real >= 5 min stop of the POLIDriving drives (fixes 8147..8507)."""
    ts, lat, lon = load(next(shared_data.glob("polidriving/andres/20231222_134710/*_col.csv.gz")))
    ts, lat, lon = ts[7500:9000], lat[7500:9000], lon[7500:9000]
    expected = _trackintel_spans(ts, lat, lon)
    got = sp.staypoints(ts, lat, lon)
    assert len(expected) == 1 and 600 < expected[0][0] < 700  # the anchor depends on where the excerpt begins
    assert list(zip(got.start_idx, got.end_idx, strict=True)) == expected


# --------------------------------------------------------------------------------------------------------------------
# places

def _stays(rows: list[tuple[dt.datetime, dt.datetime, float, float]]) -> pd.DataFrame:
    start = [int(a.timestamp() * 1000) for a, _, _, _ in rows]
    end = [int(b.timestamp() * 1000) for _, b, _, _ in rows]
    k = np.arange(len(rows)) * 10
    return pd.DataFrame({"start_idx": k, "end_idx": k + 5, "exit_idx": k + 6, "started_ms": start,
                         "finished_ms": end, "lat": [r[2] for r in rows], "lon": [r[3] for r in rows],
                         "duration_s": (np.array(end) - np.array(start)) / 1000.0})


def test_dbscan_places_chain_and_separate() -> None:
    base = (-0.2, -78.5)
    rng = np.random.default_rng(3)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = []
    centres = [offset(*base, 0, 0), offset(*base, 2000, 0), offset(*base, 0, 5000)]
    for i in range(30):
        c = centres[i % 3]
        la, lo = offset(*c, *rng.normal(0, 15, 2))
        rows.append((t0 + dt.timedelta(hours=2 * i), t0 + dt.timedelta(hours=2 * i + 1), la, lo))
    # a chain of stays 80 m apart: each within 100 m of the next, so DBSCAN (min_samples=1) joins them
    for j in range(4):
        la, lo = offset(*base, -3000, 80.0 * j)
        rows.append((t0 + dt.timedelta(hours=100 + j), t0 + dt.timedelta(hours=100.5 + j), la, lo))
    stay_place, places = pl.cluster_places(_stays(rows))
    assert len(places) == 4
    assert list(stay_place[:3]) == [0, 1, 2] and (stay_place[:30] == np.tile([0, 1, 2], 10)).all()
    assert (stay_place[30:] == 3).all()
    assert list(places.n_visits) == [10, 10, 10, 4]
    assert places.radius_m.iloc[:3].max() < 60.0
    la, lo = centres[1]
    assert abs(places.lat.iat[1] - la) * M_PER_DEG < 20 and abs(places.lon.iat[1] - lo) * M_PER_DEG < 20


def synthetic_week(nights: int = 7) -> pd.DataFrame:
    """Mon 2024-01-08 .. : home nights, weekday work, a Tue/Thu gym, a Saturday supermarket (Quito local time)."""
    tz = ZoneInfo(QUITO)
    home, work = offset(-0.2, -78.5, 0, 0), offset(-0.2, -78.5, 6000, 2000)
    gym, shop = offset(-0.2, -78.5, 3000, -1000), offset(-0.2, -78.5, -1500, 800)
    rows = []
    evening = dt.datetime(2024, 1, 7, 19, 0, tzinfo=tz)  # Sunday evening: arrive home
    for day in range(nights):
        d = dt.date(2024, 1, 8) + dt.timedelta(days=day)
        at = lambda h, m=0, d=d: dt.datetime.combine(d, dt.time(h, m), tz)  # noqa: E731
        rows.append((evening, at(7, 30), *home))
        if d.weekday() < 5:
            rows.append((at(8, 5), at(17, 20), *work))
            if d.weekday() in (1, 3):
                rows.append((at(17, 50), at(19, 0), *gym))
                evening = at(19, 30)
            else:
                evening = at(17, 55)
        else:
            rows.append((at(10, 0), at(11, 0), *shop))
            evening = at(11, 30)
    rows.append((evening, evening + dt.timedelta(hours=12), *home))
    return _stays(rows)


def test_home_work_on_synthetic_week() -> None:
    result = pl.analyse_places(synthetic_week(), QUITO)
    labels = dict(zip(result.places.place_id, result.places.label, strict=True))
    assert labels == {0: "home", 1: "work", 2: "", 3: ""}
    home = result.places.iloc[0]
    assert home.nights == 8 and home.night_dwell_s > 60 * 3600
    assert result.places.iloc[1].workdays == 5
    assert list(result.frequent.place_id[:2]) == [0, 1]


def test_home_work_need_evidence() -> None:
    result = pl.analyse_places(synthetic_week(nights=2), QUITO)  # Mon + Tue: 3 nights, only 2 workdays
    assert list(result.places.label) == ["home", "", ""]
    strict = pl.PlaceParams(home_min_nights=4)
    assert list(pl.analyse_places(synthetic_week(nights=2), QUITO, strict).places.label) == ["", "", ""]


def test_od_matrix_and_commutes() -> None:
    result = pl.analyse_places(synthetic_week(), QUITO)
    od = result.od.set_index(["origin_place", "dest_place"])
    # places in first-visit order: 0 home, 1 work, 2 gym, 3 shop
    assert od.loc[(0, 1), "n_trips"] == 5
    assert od.loc[(1, 0), "n_trips"] == 3 and od.loc[(1, 2), "n_trips"] == 2 and od.loc[(2, 0), "n_trips"] == 2
    assert od.loc[(0, 3), "n_trips"] == 2 and od.loc[(3, 0), "n_trips"] == 2
    assert od["n_trips"].sum() == len(result.trips) == len(synthetic_week()) - 1
    assert od.loc[(0, 1), "mean_travel_s"] == pytest.approx(35 * 60)
    com = result.commutes.set_index(["origin_place", "dest_place"])
    assert com.loc[(0, 1), "departure_hour"] == 7 and com.loc[(0, 1), "n_days"] == 5
    assert com.loc[(0, 1), "weekdays"] == "Mon,Tue,Wed,Thu,Fri"
    assert com.loc[(1, 0), "n_days"] == 3 and (com.loc[(0, 1), "origin_label"], com.loc[(0, 1), "dest_label"]) == (
        "home", "work")
    assert (2, 0) not in com.index  # two gym evenings are not a commute


def test_all_stays_turn_parking_gaps_into_stays() -> None:
    lat0, lon0 = -0.2, -78.5
    drive = np.arange(0, 600)  # 10 min drive east at 10 m/s, park 2 h (tracker off), drive back
    la = offset(lat0, lon0, 0.0, 0.0)[0]
    east = np.array([offset(lat0, lon0, 0.0, 10.0 * k)[1] for k in drive])
    ts = np.concatenate([drive * 1000, 7_800_000 + drive * 1000]).astype(np.int64)
    lon = np.concatenate([east, east[::-1]])
    lat = np.full(len(ts), la)
    stays = sp.all_stays(ts, lat, lon)
    assert list(stays.kind) == ["parking"] and stays.duration_s.iat[0] == 7_800 - 599
    assert (stays.start_idx.iat[0], stays.exit_idx.iat[0]) == (599, 600)


# --------------------------------------------------------------------------------------------------------------------
# routes: kernels vs references

coords = st.lists(st.tuples(st.floats(-0.25, -0.15), st.floats(-78.55, -78.45)), min_size=0, max_size=25)


@settings(max_examples=200, deadline=None)
@given(coords, st.floats(0.0, 500.0))
def test_douglas_peucker_matches_reference(pts, tol: float) -> None:
    lat, lon = [p[0] for p in pts], [p[1] for p in pts]
    x, y = rt.local_xy_m(np.array(lat), np.array(lon))
    xr, yr = rt.local_xy_m_reference(lat, lon)
    assert np.allclose(x, xr, atol=1e-6) and np.allclose(y, yr, atol=1e-6)
    assert list(rt.douglas_peucker_keep(np.array(xr), np.array(yr), tol)) == rt.douglas_peucker_keep_reference(
        xr, yr, tol)


@settings(max_examples=200, deadline=None)
@given(coords, st.floats(5.0, 2000.0))
def test_densify_matches_reference(pts, spacing: float) -> None:
    lat, lon = [p[0] for p in pts], [p[1] for p in pts]
    got_lat, got_lon = rt.densify(np.array(lat), np.array(lon), spacing)
    ref_lat, ref_lon = rt.densify_reference(lat, lon, spacing)
    assert np.allclose(got_lat, ref_lat, rtol=0, atol=1e-12) and np.allclose(got_lon, ref_lon, rtol=0, atol=1e-12)
    assert len(got_lat) == len(ref_lat)
    steps = [rt.haversine_m_reference(a, b, c, d)
             for a, b, c, d in zip(got_lat, got_lon, got_lat[1:], got_lon[1:], strict=False)]
    longest = max((rt.haversine_m_reference(a, b, c, d)
                   for a, b, c, d in zip(lat, lon, lat[1:], lon[1:], strict=False)), default=0.0)
    assert all(step <= max(spacing, longest / rt.MAX_SPLIT) * (1 + 1e-3) for step in steps)  # linear in degrees


@settings(max_examples=200, deadline=None)
@given(coords, coords, st.floats(10.0, 20_000.0))
def test_frechet_matches_reference(a, b, cutoff: float) -> None:
    arrays = (np.array([p[0] for p in a]), np.array([p[1] for p in a]),
              np.array([p[0] for p in b]), np.array([p[1] for p in b]))
    exact = rt.discrete_frechet_m_reference(a, b)
    assert rt.discrete_frechet_m(*arrays) == pytest.approx(exact, rel=1e-9, abs=1e-6)
    early = rt.discrete_frechet_m(*arrays, cutoff)  # early abandon: exact below the cutoff, a bound above it
    assert (early > cutoff) == (exact > cutoff) and early <= exact + 1e-6
    if exact <= cutoff:
        assert early == pytest.approx(exact, rel=1e-9, abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(coords.filter(bool), min_size=0, max_size=6), st.floats(10.0, 20_000.0))
def test_pairwise_frechet_matches_reference(lines, cutoff: float) -> None:
    lat = np.array([p[0] for line in lines for p in line])
    lon = np.array([p[1] for line in lines for p in line])
    offsets = np.concatenate([[0], np.cumsum([len(line) for line in lines])]).astype(np.int64)
    got = rt.pairwise_frechet_m(lat, lon, offsets, cutoff)
    k = 0
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            exact = rt.discrete_frechet_m_reference(lines[i], lines[j])
            assert (got[k] > cutoff) == (exact > cutoff)
            assert got[k] <= exact + 1e-6
            if exact <= cutoff:
                assert got[k] == pytest.approx(exact, rel=1e-9, abs=1e-6)
            k += 1


# --------------------------------------------------------------------------------------------------------------------
# routes: behaviour

def test_route_clustering_groups_near_identical_and_separates_others() -> None:
    _, lat, lon = load(FIXTURE)
    ok = ~np.isnan(lat)
    lat, lon = lat[ok], lon[ok]
    rng = np.random.default_rng(5)
    lines = []
    for _ in range(4):  # the same drive four times, GPS noise sigma 8 m
        noise = rng.normal(0, 8.0, size=(len(lat), 2)) / M_PER_DEG
        lines.append((lat + noise[:, 0], lon + noise[:, 1]))
    lines.append((lat[::-1].copy(), lon[::-1].copy()))  # driven the other way
    lines.append((lat + 600 / M_PER_DEG, lon.copy()))  # a parallel road 600 m north
    lines.append((lat + 600 / M_PER_DEG + 5 / M_PER_DEG, lon.copy()))  # ... driven twice
    simplified = [rt.simplify_polyline(a, b, 20.0) for a, b in lines]
    assert all(len(s[0]) < len(lat) / 5 for s in simplified)
    route_of, routes = rt.cluster_routes(simplified, np.arange(100, 107))
    assert list(route_of) == [0, 0, 0, 0, -1, 1, 1]
    assert list(routes.n_trips) == [4, 2]
    assert routes.trip_ids.iat[0] == [100, 101, 102, 103] and routes.representative_trip.iat[0] in (100, 101, 102, 103)
    assert routes.max_spread_m.iat[0] < 200.0
    first = routes.coordinates.iat[0][0]
    assert first[0] == pytest.approx(lon[0], abs=5e-4) and first[1] == pytest.approx(lat[0], abs=5e-4)
    assert routes.length_m.iat[0] > 1000.0


def test_frequent_routes_from_trips() -> None:
    lat0, lon0 = -0.2, -78.5
    seg = [offset(lat0, lon0, 0.0, 10.0 * k) for k in range(300)]
    lat = np.array([p[0] for p in seg] * 3)
    lon = np.array([p[1] for p in seg] * 3)
    trips = pd.DataFrame({"trip_id": [7, 8, 9], "start_idx": [0, 300, 600], "end_idx": [299, 599, 899]})
    route_of, routes = rt.frequent_routes(lat, lon, trips)
    assert list(route_of) == [0, 0, 0] and routes.trip_ids.iat[0] == [7, 8, 9]
    assert len(routes.coordinates.iat[0]) == 2  # a straight road simplifies to its two ends
