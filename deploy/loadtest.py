"""Load test for capacity planning (docs/scaling.md): what one sample costs each part of the stack.

The fleet simulator's batches (``--vehicles`` cars driving at 1 Hz for ``--seconds``, 60-sample
batches, realistic drives, all timestamps in the past) are published to a private Mosquitto at a
fixed pace (``--rate`` samples/s, i.e. that many cars' live traffic at 1 Hz) while ``--workers``
real ``vinsight ingest worker`` processes store them in a fresh database on the machine's
PostgreSQL (native partitioning). It reports

* CPU seconds per sample of the ingest workers, of the PostgreSQL backends serving this database
  (their connections and autovacuum; shared WAL writer/checkpointer excluded) and of Mosquitto,
  hence how many 1 Hz vehicles one core of each carries: throughput is a race on a shared machine,
  CPU per sample is what sizing needs;
* publish -> commit latency (p50 / p99) at that pace, from the workers' own histograms;
* bytes per stored sample: the samples partitions (heap, TOAST, indexes) and the rollups, measured
  with pg_total_relation_size after a VACUUM ANALYZE.

    python deploy/loadtest.py                        # 2,000 vehicles x 600 s, 20,000 samples/s, 1 worker
    python deploy/loadtest.py --workers 2 --rate 40000

The publisher runs in this process on the same machine; its CPU is not counted. The last line is
``worker_us_per_sample=… pg_us_per_sample=… broker_us_per_sample=… bytes_per_sample=…``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from bench.ingest_throughput import (  # noqa: E402
    Workers,
    create_database,
    drop_database,
    histogram_quantiles,
    metric_sum,
)
from ingest.maintenance import apply_storage_policies, run_maintenance  # noqa: E402
from ingest.migrate import migrate  # noqa: E402
from ingest.settings import IngestSettings  # noqa: E402
from vinsight.embedded import MosquittoBroker  # noqa: E402
from vinsight.fleet_simulator import FleetSimulator, MqttTarget, publish_prebuilt  # noqa: E402


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def backend_pids(db_url: str, db_name: str) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (db_name,)).fetchall()
    return [r[0] for r in rows]


def relation_bytes(conn: psycopg.Connection, parent: str) -> tuple[int, int, int]:
    """(table incl. TOAST, indexes, total) over a relation and its partitions."""
    row = conn.execute(
        """
        WITH rels AS (
            SELECT %s::regclass AS r
            UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)
        SELECT coalesce(sum(pg_table_size(r)), 0), coalesce(sum(pg_indexes_size(r)), 0),
               coalesce(sum(pg_total_relation_size(r)), 0)
        FROM rels""", (parent, parent)).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=2000)
    ap.add_argument("--seconds", type=int, default=600, help="simulated driving seconds per vehicle")
    ap.add_argument("--rate", type=float, default=20_000, help="publish pace in samples/s (= 1 Hz vehicles)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vinsight-loadtest-"))
    broker = MosquittoBroker(work / "mosquitto")
    mqtt_port = broker.start()
    db_url, db_name = create_database()
    print(f"database {db_name}, broker 127.0.0.1:{mqtt_port}", flush=True)
    try:
        migrate(db_url)
        apply_storage_policies(db_url, IngestSettings(db_url=db_url))
        fleet = FleetSimulator(args.vehicles, 1.0, 60, seed=11, device_prefix="load")
        start_ms = int(time.time() * 1000) - (args.seconds + 120) * 1000
        t = time.perf_counter()
        prebuilt = fleet.prebuild(args.seconds, start_ms, workers=os.cpu_count() or 1)
        total = sum(n for _, _, n in prebuilt)
        wire = sum(len(p) for _, p, _ in prebuilt)
        print(f"prebuilt {len(prebuilt):,} messages, {total:,} samples, payload {wire / total:.1f} B/sample "
              f"in {time.perf_counter() - t:.1f} s", flush=True)

        workers = Workers(args.workers, db_url, mqtt_port, "loadtest")
        try:
            watched = [p.pid for p in workers.procs]
            broker_pid = broker._proc.pid
            pg_before = cpu_seconds(backend_pids(db_url, db_name))
            w_before, b_before = cpu_seconds(watched), cpu_seconds([broker_pid])
            t0 = time.perf_counter()
            stats = publish_prebuilt(MqttTarget("127.0.0.1", mqtt_port), prebuilt, samples_per_s=args.rate)
            publish_s = time.perf_counter() - t0
            deadline = time.monotonic() + 600
            while workers.committed() < total:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {workers.committed():,.0f} of {total:,} samples committed")
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
            w_after, b_after = cpu_seconds(watched), cpu_seconds([broker_pid])
            pg_after = cpu_seconds(backend_pids(db_url, db_name))
            texts = workers.metrics()
        finally:
            workers.stop()
        assert stats.acked_samples == total, f"broker acknowledged {stats.acked_samples} of {total}"

        worker_cpu = sum(w_after[p] - w_before.get(p, 0.0) for p in w_after)
        broker_cpu = sum(b_after[p] - b_before.get(p, 0.0) for p in b_after)
        pg_cpu = sum(v - pg_before.get(p, 0.0) for p, v in pg_after.items())
        p50, p99 = histogram_quantiles(texts, "vinsight_ingest_publish_to_commit_seconds", (0.5, 0.99))
        flushes = metric_sum(texts, "vinsight_ingest_flushes_total")
        achieved = total / elapsed
        print(f"published {total:,} samples in {publish_s:.1f} s (target {args.rate:,.0f}/s), all committed after "
              f"{elapsed:.1f} s = {achieved:,.0f} samples/s, {flushes:.0f} flushes, {args.workers} worker(s)")
        print(f"publish->commit p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        per = {"ingest workers": worker_cpu, "PostgreSQL backends": pg_cpu, "Mosquitto": broker_cpu}
        for name, cpu in per.items():
            us = cpu / total * 1e6
            print(f"{name:20s} {cpu:6.1f} CPU s = {us:5.2f} us/sample = {cpu / elapsed:4.2f} cores at this pace; "
                  f"one core carries {1e6 / us:,.0f} samples/s" if us else f"{name}: no CPU measured")

        run_maintenance(db_url)  # native backend: rollups refreshed from the invalidation log
        with psycopg.connect(db_url, autocommit=True) as conn:
            stored = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
            assert stored == total, f"{stored} rows stored, {total} published"
            conn.execute("VACUUM ANALYZE samples")
            conn.execute("VACUUM ANALYZE samples_hourly")
            conn.execute("VACUUM ANALYZE samples_daily")
            heap, idx, tot = relation_bytes(conn, "samples")
            hourly = relation_bytes(conn, "samples_hourly")[2]
            daily = relation_bytes(conn, "samples_daily")[2]
            n_hourly = conn.execute("SELECT count(*) FROM samples_hourly").fetchone()[0]
            n_daily = conn.execute("SELECT count(*) FROM samples_daily").fetchone()[0]
            vehicles = conn.execute("SELECT count(DISTINCT device_key) FROM samples").fetchone()[0]
        print(f"storage for {stored:,} samples of {vehicles} vehicles (native PostgreSQL, uncompressed):")
        print(f"  samples heap+TOAST {heap / 2**20:8.1f} MiB = {heap / stored:6.1f} B/sample")
        print(f"  samples indexes    {idx / 2**20:8.1f} MiB = {idx / stored:6.1f} B/sample")
        print(f"  samples total      {tot / 2**20:8.1f} MiB = {tot / stored:6.1f} B/sample")
        print(f"  samples_hourly     {hourly / 2**20:8.2f} MiB for {n_hourly:,} rows = "
              f"{hourly / max(n_hourly, 1):.0f} B/row")
        print(f"  samples_daily      {daily / 2**20:8.2f} MiB for {n_daily:,} rows = "
              f"{daily / max(n_daily, 1):.0f} B/row")
        print(f"worker_us_per_sample={worker_cpu / total * 1e6:.2f} pg_us_per_sample={pg_cpu / total * 1e6:.2f} "
              f"broker_us_per_sample={broker_cpu / total * 1e6:.2f} bytes_per_sample={tot / stored:.1f} "
              f"p99_ms={p99 * 1000:.0f}")
        return 0
    finally:
        if args.keep:
            print(f"kept database {db_name}")
        else:
            drop_database(db_name)
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
