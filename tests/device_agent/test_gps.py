"""GPS through a real gpsd (gpsfake replaying an NMEA log) and through NMEA on a pty; the clock."""

from __future__ import annotations

import datetime as dt
import os
import pty
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.clock import AgentClock
from device_agent.gps import GpsdSource, NmeaParser, NmeaSource, nmea_checksum, split_sentence
from device_agent.replay import read_polidriving
from device_agent.settings import AgentSettings

from .conftest import CollectingSink

DRIVE = Path(__file__).resolve().parent.parent / "fixtures" / "polidriving" / "20231222_134710_col.csv.gz"


def _sentence(body: str) -> str:
    return f"${body}*{nmea_checksum(body)}\r\n"


def _dm(value: float, lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if lat else ("E" if value >= 0 else "W")
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60
    return (f"{degrees:02d}{minutes:09.6f}" if lat else f"{degrees:03d}{minutes:09.6f}"), hemi


def nmea_epoch(t: dt.datetime, lat: float, lon: float, alt: float, knots: float, course: float,
               sats: int = 9, hdop: float = 0.9) -> str:
    hms = t.strftime("%H%M%S") + ".00"
    la, ns = _dm(lat, True)
    lo, ew = _dm(lon, False)
    return (_sentence(f"GPRMC,{hms},A,{la},{ns},{lo},{ew},{knots:.2f},{course:.1f},{t.strftime('%d%m%y')},,,A")
            + _sentence(f"GPGGA,{hms},{la},{ns},{lo},{ew},1,{sats:02d},{hdop:.1f},{alt:.1f},M,0.0,M,,")
            + _sentence(f"GPGSA,A,3,01,02,03,04,05,06,07,08,09,,,,1.8,{hdop:.1f},1.5")
            + "".join(_sentence(f"GPGSV,3,{page + 1},09," + ",".join(
                f"{n:02d},{30 + n},{40 * n % 360:03d},{35 + n}" for n in range(page * 4 + 1, min(page * 4 + 5, 10))))
                for page in range(3)))


def drive_epochs(limit: int = 60) -> list[tuple[dt.datetime, float, float, float, float]]:
    out = []
    for row in read_polidriving(DRIVE):
        v = row.values
        if "latitude" in v and "longitude" in v:
            t = dt.datetime.fromtimestamp(row.ts_ms / 1000, dt.UTC)
            out.append((t, v["latitude"], v["longitude"], v.get("altitude", 2800.0), v.get("speed", 0.0) / 1.852))
        if len(out) >= limit:
            break
    return out


def write_log(path: Path, epochs) -> None:
    path.write_text("".join(nmea_epoch(t, la, lo, alt, kn, 45.0) for t, la, lo, alt, kn in epochs))


def test_parser_reads_a_generated_drive() -> None:
    epochs = drive_epochs(20)
    parser = NmeaParser()
    fixes = []
    for t, la, lo, alt, kn in epochs:
        for line in nmea_epoch(t, la, lo, alt, kn, 45.0).splitlines():
            if (fix := parser.feed(line)) is not None:
                fixes.append(fix)
    fixes.append(parser.flush())
    assert len(fixes) == len(epochs)
    for fix, (t, la, lo, alt, kn) in zip(fixes, epochs, strict=True):
        assert fix.fix_mode == 3 and fix.satellites == 9 and fix.hdop == 0.9 and fix.altitude == round(alt, 1)
        assert abs(fix.latitude - la) < 1e-6 and abs(fix.longitude - lo) < 1e-6
        assert abs(fix.speed_kmh - kn * 1.852) < 0.02 and fix.course == 45.0
        assert fix.time_utc == t.timestamp()


@settings(max_examples=300)
@given(st.text(max_size=120))
def test_parser_never_raises_on_garbage(line: str) -> None:
    parser = NmeaParser()
    parser.feed(line)
    parser.feed("$" + line)
    parser.feed(f"${line}*{nmea_checksum(line)}")
    parser.flush()


def test_bad_checksum_is_counted_not_used() -> None:
    parser = NmeaParser()
    good = _sentence("GPGGA,120000.00,4530.000000,N,00910.000000,E,1,08,1.0,120.0,M,0.0,M,,").strip()
    parser.feed(good[:-2] + ("00" if good[-2:] != "00" else "11"))
    assert parser.bad_sentences == 1
    with pytest.raises(ValueError):
        split_sentence("$GPGGA,1,2*ZZ")


def _free_port() -> int:
    from vinsight.embedded import free_port

    return free_port()


@pytest.mark.skipif(shutil.which("gpsfake") is None, reason="gpsd-clients not installed (scripts/services.sh)")
def test_fixes_through_real_gpsd(tmp_path) -> None:
    epochs = drive_epochs(40)
    log = tmp_path / "drive.nmea"
    write_log(log, epochs)
    port = _free_port()
    fake = subprocess.Popen(["gpsfake", "-q", "-c", "0.1", "-P", str(port), str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sink = CollectingSink()
    clock = AgentClock()
    source = GpsdSource(AgentSettings(gpsd_port=port, reconnect_min_s=0.2, reconnect_max_s=1), sink, clock)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    try:
        time.sleep(1.5)
        thread.start()
        assert sink.wait(lambda s: sum(1 for n, _v, _t in s.readings if n == "latitude") >= 10, 30)
        lats = [v for n, v, _t in sink.readings if n == "latitude"]
        known = [la for _t, la, _lo, _a, _k in epochs]
        assert all(min(abs(la - k) for k in known) < 1e-6 for la in lats)  # every fix is one of the log's
        assert {"hdop", "satellites", "gps_speed", "course", "fix_mode"} <= sink.names()
        assert source.status()["connected"]
        # the log is from 2023: the clock was corrected from GPS time by years
        assert clock.synchronised and clock.offset_s < -86400
    finally:
        stop.set()
        os.killpg(fake.pid, 15)
        fake.wait(10)
        thread.join(5)


def test_nmea_fallback_on_a_pty(tmp_path) -> None:
    master, slave = pty.openpty()
    slave_path = os.ttyname(slave)
    sink = CollectingSink()
    source = NmeaSource(AgentSettings(nmea_port=slave_path, gps_mode="nmea"), sink, AgentClock())
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    try:
        epochs = drive_epochs(12)
        for i, (t, la, lo, alt, kn) in enumerate(epochs):
            data = nmea_epoch(t, la, lo, alt, kn, 90.0)
            if i == 3:
                data += "$GPGGA,garbage*00\r\n\x00\xff junk\r\n"
            os.write(master, data.encode("latin-1"))
            time.sleep(0.02)
        assert sink.wait(lambda s: sum(1 for n, _v, _t in s.readings if n == "latitude") >= 10, 10)
        assert source.status()["bad_sentences"] >= 2
        courses = {v for n, v, _t in sink.readings if n == "course"}
        assert courses == {90.0}
    finally:
        stop.set()
        thread.join(5)
        os.close(master)
        os.close(slave)


def test_clock_offsets_timestamps_when_it_may_not_set_the_system_clock() -> None:
    corrections = []
    wall = [1_000_000.0]
    clock = AgentClock(max_drift_s=2.0, set_system_clock=False, on_correction=corrections.append,
                       wall=lambda: wall[0])
    assert not clock.synchronised
    assert clock.observe_gps_time(1_000_001.0) is None and clock.synchronised  # within tolerance
    drift = clock.observe_gps_time(1_700_000_000.0)
    assert drift == pytest.approx(1_700_000_000.0 - 1_000_000.0)
    assert clock.now_ms() == pytest.approx(1_700_000_000_000, abs=1)
    wall[0] += 10
    assert clock.now_ms() == pytest.approx(1_700_000_010_000, abs=1)
    assert corrections == [drift]
