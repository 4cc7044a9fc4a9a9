"""Prometheus metrics and the health check of an ingest worker, on one small HTTP endpoint.

``GET /metrics`` is the Prometheus text format; ``GET /healthz`` answers 200 with a JSON body when
the worker is connected to the broker and the database and its last flush did not fail, else 503
with the same body saying what is wrong (for a load balancer, systemd watchdog or Kubernetes probe).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0,
                   5.0, 10.0, 30.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("vinsight_ingest_messages", "MQTT messages received, by kind", ["kind"], registry=r)
        self.samples = Counter("vinsight_ingest_samples", "Samples committed (new rows)", registry=r)
        self.duplicates = Counter("vinsight_ingest_duplicate_samples",
                                  "Samples already stored (redeliveries), skipped", registry=r)
        self.events = Counter("vinsight_ingest_events", "Events committed (new rows)", registry=r)
        self.rejects = Counter("vinsight_ingest_rejects", "Dead letters written, by reason", ["reason"], registry=r)
        self.flushes = Counter("vinsight_ingest_flushes", "Transactions committed", registry=r)
        self.flush_failures = Counter("vinsight_ingest_flush_failures", "Flushes that failed and were retried",
                                      ["error"], registry=r)
        self.batch_rows = Histogram("vinsight_ingest_batch_rows", "Rows per committed flush",
                                    buckets=(10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000), registry=r)
        self.commit_seconds = Histogram("vinsight_ingest_commit_seconds", "Time to write and commit one flush",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.publish_to_commit = Histogram(
            "vinsight_ingest_publish_to_commit_seconds",
            "From the publisher's sent_ms user property to our commit (clock skew included)",
            buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("vinsight_ingest_consumer_lag_seconds",
                         "Age of the oldest message received but not yet committed", registry=r)
        self.newest_sample_age = Gauge("vinsight_ingest_newest_sample_age_seconds",
                                       "Commit time minus the newest sample timestamp of the last flush", registry=r)
        self.inflight = Gauge("vinsight_ingest_inflight_messages", "Messages received, not yet acknowledged",
                              registry=r)
        self.mqtt_connected = Gauge("vinsight_ingest_mqtt_connected", "1 when connected to the broker", registry=r)
        self.db_connected = Gauge("vinsight_ingest_db_connected", "1 when the database connection is up", registry=r)


class MetricsServer:
    """Serves /metrics and /healthz from a daemon thread."""

    def __init__(self, metrics: IngestMetrics, health: Callable[[], dict[str, Any]], host: str, port: int) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    report = health()
                    body = json.dumps(report).encode()
                    status, ctype = (200 if report.get("healthy") else 503), "application/json"
                else:
                    body, status, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
