"""End-to-end ingest throughput and latency: simulator -> Mosquitto -> ingest workers -> PostgreSQL.

What it measures, in one run on this machine:

* **raw**: the same rows, binary-COPYed straight into the same ``samples`` table (same unique
  index, same partitions), in transactions of the workers' flush size, COPY buffers built before
  the clock starts. This is the database's limit for this data: the baseline.
* **e2e, 1 and 2 workers**: every payload pre-encoded by the fleet simulator (1,000 vehicles at
  1 Hz, 60-sample batches, realistic drives) and published as fast as a private Mosquitto
  acknowledges it, while ``vinsight ingest worker`` processes consume, validate, COPY and commit.
  Throughput = samples committed / (last commit - first publish), read from the workers' own
  Prometheus counters; a run only counts when every sample is in the table.
* **latency at half load**: the same payloads again, paced at half the best e2e rate; the workers'
  ``publish_to_commit`` histograms (``sent_ms`` user property to commit) give p50 / p99.

Each figure is the median of ``--runs`` runs (the machine is shared and noisy). The last line is
``ingest_samples_per_s=<E> raw_copy_rows_per_s=<R> ratio=<E/R>``.

    python bench/ingest_throughput.py [--vehicles 1000] [--seconds 600] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.maintenance import apply_storage_policies  # noqa: E402
from ingest.migrate import migrate  # noqa: E402
from ingest.partitions import ensure_partitions, utc_day  # noqa: E402
from ingest.pipeline import Delivery, SampleRows, process_delivery  # noqa: E402
from ingest.settings import IngestSettings  # noqa: E402
from ingest.store import samples_copy_buffer  # noqa: E402
from vinsight.embedded import MosquittoBroker, free_port, wait_for_port  # noqa: E402
from vinsight.fleet_simulator import FleetSimulator, MqttTarget, publish_prebuilt  # noqa: E402

ADMIN_DSN = os.environ.get("VINSIGHT_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
FLUSH_ROWS = 20_000


def create_database() -> str:
    name = "vinsight_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return re.sub(r"/[^/]*$", f"/{name}", ADMIN_DSN), name


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_tables(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE samples, rollup_invalidations, device_status, dead_letters")
        conn.execute("VACUUM ANALYZE samples")
        conn.execute("CHECKPOINT")


def register_devices(db_url: str, device_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO devices (device_id, status) SELECT d, 'auto' FROM unnest(%s::text[]) d"
                     " ON CONFLICT DO NOTHING", (device_ids,))
        return dict(conn.execute("SELECT device_id, device_key FROM devices").fetchall())


def raw_copy(db_url: str, groups: list[list[tuple[int, SampleRows]]]) -> float:
    """rows/s of binary COPY + commit per flush-sized group, buffers built beforehand."""
    buffers = [samples_copy_buffer(g) for g in groups]
    rows = sum(len(r) for g in groups for _, r in g)
    with psycopg.connect(db_url, autocommit=True) as conn:
        t0 = time.perf_counter()
        for names, buf in buffers:
            with conn.transaction(), conn.cursor() as cur:
                cols = ", ".join(names)
                with cur.copy(f"COPY samples ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(buf)
        elapsed = time.perf_counter() - t0
        assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == rows
    return rows / elapsed


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric_sum(texts: list[str], name: str) -> float:
    total = 0.0
    for text in texts:
        for m in re.finditer(rf"^{name} ([0-9.e+]+)$", text, re.M):
            total += float(m.group(1))
    return total


def histogram_quantiles(texts: list[str], name: str, qs: tuple[float, ...]) -> list[float]:
    """PromQL-style histogram_quantile over the summed buckets of every worker."""
    buckets: dict[float, float] = {}
    for text in texts:
        for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', text, re.M):
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    bounds = sorted(buckets)
    total = buckets[float("inf")]
    out = []
    for q in qs:
        rank = q * total
        prev_le, prev_count = 0.0, 0.0
        for le in bounds:
            if buckets[le] >= rank:
                if le == float("inf"):
                    out.append(prev_le)
                else:
                    span = buckets[le] - prev_count
                    out.append(prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0))
                break
            prev_le, prev_count = le, buckets[le]
    return out


class Workers:
    def __init__(self, n: int, db_url: str, mqtt_port: int, prefix: str) -> None:
        self.base = free_port()
        while any(free_port(self.base + i) != self.base + i for i in range(n)):
            self.base = free_port()
        self.ports = [self.base + i for i in range(n)]
        env = dict(os.environ, VINSIGHT_INGEST_SESSION_EXPIRY_S="60", VINSIGHT_INGEST_FLUSH_ROWS=str(FLUSH_ROWS))
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "ingest", "--log-level", "WARNING", "ingest", "worker", "--index", str(i),
             "--db-url", db_url, "--mqtt-port", str(mqtt_port), "--share-group", prefix,
             "--client-id-prefix", prefix, "--metrics-port", str(self.base)], cwd=ROOT, env=env)
            for i in range(n)]
        for port in self.ports:
            wait_for_port("127.0.0.1", port, 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            texts = self.metrics()
            if all(re.search(r"^vinsight_ingest_mqtt_connected 1", t, re.M) for t in texts):
                break  # (subscribed a moment after; the 0.5 s below covers the SUBACK)
            time.sleep(0.1)
        time.sleep(0.5)  # subscriptions in place

    def metrics(self) -> list[str]:
        return [scrape(p) for p in self.ports]

    def committed(self) -> float:
        return metric_sum(self.metrics(), "vinsight_ingest_samples_total")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)


def e2e(n_workers: int, db_url: str, mqtt_port: int, prebuilt: list, total: int, tag: str,
        samples_per_s: float | None = None) -> tuple[float, list[str]]:
    workers = Workers(n_workers, db_url, mqtt_port, f"bench-{tag}")
    try:
        t0 = time.perf_counter()
        stats = publish_prebuilt(MqttTarget("127.0.0.1", mqtt_port), prebuilt, samples_per_s=samples_per_s)
        assert stats.acked_samples == total, f"broker acknowledged {stats.acked_samples} of {total}"
        deadline = time.monotonic() + 300
        while workers.committed() < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {workers.committed()} of {total} samples committed")
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        texts = workers.metrics()
    finally:
        workers.stop()
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert stored == total, f"{stored} rows stored, {total} published"
    return total / elapsed, texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=600, help="simulated seconds per vehicle")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--quick", action="store_true", help="200 vehicles x 300 s, 1 run (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.vehicles, args.seconds, args.runs = 200, 300, 1
    worker_counts = [int(w) for w in args.workers.split(",")]

    work = Path(tempfile.mkdtemp(prefix="vinsight-bench-"))
    broker = MosquittoBroker(work / "mosquitto")
    mqtt_port = broker.start()
    db_url, db_name = create_database()
    try:
        migrate(db_url)
        apply_storage_policies(db_url, IngestSettings(db_url=db_url))
        fleet = FleetSimulator(args.vehicles, 1.0, 60, seed=7, device_prefix="bench")
        t = time.perf_counter()
        start_ms = int(time.time() * 1000) - (args.seconds + 120) * 1000  # all in the past, none refused
        prebuilt = fleet.prebuild(args.seconds, start_ms, workers=os.cpu_count() or 1)
        total = sum(n for _, _, n in prebuilt)
        print(f"prebuilt {len(prebuilt)} messages, {total} samples ({total / len(prebuilt):.0f} per message) "
              f"in {time.perf_counter() - t:.1f} s", flush=True)

        keys = register_devices(db_url, fleet.device_ids)
        now = int(time.time() * 1000)
        rows = []
        for topic, payload, _n in prebuilt:
            out = process_delivery(Delivery(topic, payload, "application/vnd.vinsight.samples.v1+binary", now), now)
            assert out.samples is not None and not out.dead_letters
            rows.append((keys[out.device_id], out.samples))
        groups, current, size = [], [], 0
        for item in rows:
            current.append(item)
            size += len(item[1])
            if size >= FLUSH_ROWS:
                groups.append(current)
                current, size = [], 0
        if current:
            groups.append(current)
        days = {utc_day(int(ts)) for _, r in rows for ts in (r.ts_ms.min(), r.ts_ms.max())}
        with psycopg.connect(db_url, autocommit=True) as conn:
            ensure_partitions(conn, days, 1)

        raw, e2e_rates = [], {w: [] for w in worker_counts}
        for run in range(args.runs):
            reset_tables(db_url)
            raw.append(raw_copy(db_url, groups))
            print(f"run {run + 1}: raw COPY {raw[-1]:,.0f} rows/s", flush=True)
            for w in worker_counts:
                reset_tables(db_url)
                rate, _ = e2e(w, db_url, mqtt_port, prebuilt, total, f"r{run}w{w}")
                e2e_rates[w].append(rate)
                print(f"run {run + 1}: e2e {w} worker(s) {rate:,.0f} samples/s", flush=True)

        raw_median = statistics.median(raw)
        medians = {w: statistics.median(v) for w, v in e2e_rates.items()}
        best_w = max(medians, key=medians.__getitem__)
        for w, m in medians.items():
            print(f"e2e {w} worker(s): median {m:,.0f} samples/s = {m / raw_median:.2f} of raw "
                  f"(runs: {', '.join(f'{x:,.0f}' for x in e2e_rates[w])})")
        print(f"raw binary COPY: median {raw_median:,.0f} rows/s (runs: {', '.join(f'{x:,.0f}' for x in raw)})")

        half = medians[best_w] / 2
        p50s, p99s = [], []
        for run in range(args.runs):
            reset_tables(db_url)
            _, texts = e2e(best_w, db_url, mqtt_port, prebuilt, total, f"lat{run}", samples_per_s=half)
            p50, p99 = histogram_quantiles(texts, "vinsight_ingest_publish_to_commit_seconds", (0.5, 0.99))
            p50s.append(p50)
            p99s.append(p99)
            print(f"latency run {run + 1} at {half:,.0f} samples/s ({best_w} worker(s)): "
                  f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms", flush=True)
        print(f"publish_to_commit_p50_ms={statistics.median(p50s) * 1000:.0f} "
              f"publish_to_commit_p99_ms={statistics.median(p99s) * 1000:.0f} at half load "
              f"({half:,.0f} samples/s, {best_w} worker(s))")
        best = medians[best_w]
        print(f"ingest_samples_per_s={best:.0f} raw_copy_rows_per_s={raw_median:.0f} ratio={best / raw_median:.2f}")
        return 0
    finally:
        drop_database(db_name)
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
