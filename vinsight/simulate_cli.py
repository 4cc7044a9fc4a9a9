"""``vinsight simulate``: a simulated fleet publishing realistic drives to an MQTT broker.

Every vehicle drives trips (urban stop-and-go, rural roads, motorway) separated by parked periods,
with a driver style (calm, aggressive, night commuter), and sends 60-sample binary batches over
MQTT v5 / QoS 1 exactly as the in-car agent does (content type property set), plus a ``sent_ms``
user property for publish-to-commit latency. In live mode every vehicle starts driving at once and
batches are published as their last sample is taken (timestamps = now); parked gaps come later.
With --max-rate the whole run is encoded first (timestamps ending now) and then published as fast
as the broker acknowledges: a load generator for ingest benchmarks.

Settings also come from the environment: VINSIGHT_MQTT_HOST / VINSIGHT_MQTT_PORT for the broker,
VINSIGHT_SIMULATE_* for the rest (e.g. VINSIGHT_SIMULATE_VEHICLES=100).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SimulatorSettings(BaseSettings):
    """Defaults of ``vinsight simulate``; command-line options override them."""

    model_config = SettingsConfigDict(env_prefix="VINSIGHT_SIMULATE_", env_file=None, extra="ignore",
                                      populate_by_name=True)

    host: str = Field("127.0.0.1", description="MQTT broker host",
                      validation_alias=AliasChoices("VINSIGHT_MQTT_HOST", "VINSIGHT_SIMULATE_HOST", "host"))
    port: int = Field(1883, description="MQTT broker port (8883 for TLS)",
                      validation_alias=AliasChoices("VINSIGHT_MQTT_PORT", "VINSIGHT_SIMULATE_PORT", "port"))
    username: str | None = Field(None, description="MQTT username (must be allowed to write every device's data)")
    password: str | None = Field(None, description="MQTT password")
    tls_ca: str | None = Field(None, description="CA certificate file; setting it connects with TLS")
    vehicles: int = Field(10, ge=1, description="Number of simulated vehicles")
    rate_hz: float = Field(1.0, gt=0, description="Samples per second per driving vehicle")
    batch_seconds: float = Field(60.0, gt=0, description="Seconds of samples per published batch")
    duration_s: float = Field(0.0, ge=0, description="Seconds to run (0 = until Ctrl-C; --max-rate needs > 0)")
    seed: int = Field(0, description="Random seed: the same seed gives the same drives")
    device_prefix: str = Field("sim", description="Device ids are <prefix>-0000, <prefix>-0001, ...")
    styles: str = Field("calm=0.6,aggressive=0.25,night_commuter=0.15",
                        description="Driver style mix as name=weight pairs")
    speed: float = Field(1.0, gt=0, description="Live mode time factor (2 = twice as fast as real time)")
    max_inflight: int = Field(10_000, ge=1, description="Most unacknowledged messages in --max-rate mode")
    workers: int = Field(0, ge=0, description="Processes encoding payloads in --max-rate mode (0 = one per CPU)")


def register(subparsers: argparse._SubParsersAction) -> None:
    try:
        s = SimulatorSettings()
        env_error = ""
    except ValidationError as exc:  # a bad variable must not break every other command's parser
        s = SimulatorSettings.model_construct()
        env_error = f"invalid VINSIGHT_SIMULATE_*/VINSIGHT_MQTT_* environment: {exc}"
    p = subparsers.add_parser(
        "simulate",
        help="simulate a fleet of vehicles publishing realistic drives over MQTT (live or as fast as possible)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--vehicles", type=int, default=s.vehicles, help=f"number of vehicles (default {s.vehicles})")
    p.add_argument("--rate", type=float, default=s.rate_hz,
                   help=f"sample rate in Hz per driving vehicle (default {s.rate_hz:g})")
    p.add_argument("--duration", type=float, default=s.duration_s,
                   help=f"seconds to simulate (default {s.duration_s:g}; 0 = until Ctrl-C)")
    p.add_argument("--batch-seconds", type=float, default=s.batch_seconds,
                   help=f"seconds of samples per batch (default {s.batch_seconds:g})")
    p.add_argument("--seed", type=int, default=s.seed, help=f"random seed (default {s.seed})")
    p.add_argument("--host", default=s.host, help=f"MQTT broker host (default {s.host}; env VINSIGHT_MQTT_HOST)")
    p.add_argument("--port", type=int, default=s.port,
                   help=f"MQTT broker port (default {s.port}; env VINSIGHT_MQTT_PORT)")
    p.add_argument("--username", default=s.username, help="MQTT username")
    p.add_argument("--password", default=s.password, help="MQTT password (env VINSIGHT_SIMULATE_PASSWORD)")
    p.add_argument("--tls-ca", default=s.tls_ca, help="CA certificate file; connects with TLS")
    p.add_argument("--max-rate", action="store_true",
                   help="encode the whole run first, then publish as fast as the broker acknowledges")
    p.add_argument("--max-inflight", type=int, default=s.max_inflight,
                   help=f"most unacknowledged messages with --max-rate (default {s.max_inflight})")
    p.add_argument("--workers", type=int, default=s.workers,
                   help="processes that encode payloads with --max-rate (default: one per CPU)")
    p.add_argument("--speed", type=float, default=s.speed, help=f"live time factor (default {s.speed:g})")
    p.add_argument("--styles", default=s.styles, help=f"driver style mix (default {s.styles})")
    p.add_argument("--device-prefix", default=s.device_prefix,
                   help=f"device ids are <prefix>-NNNN (default {s.device_prefix})")
    p.set_defaults(func=run_simulate, env_error=env_error)


def _progress_line(stats: object, started: float) -> str:
    d = stats.as_dict()  # type: ignore[attr-defined]
    return (f"simulate: {time.monotonic() - started:7.1f}s  messages {d['messages']}  samples {d['samples']}  "
            f"acked {d['acked_messages']}  refused {d['refused']}")


def run_simulate(args: argparse.Namespace) -> int:
    from .fleet_simulator import FleetSimulator, MqttTarget, parse_style_mix

    if getattr(args, "env_error", ""):
        print(f"simulate: {args.env_error}", file=sys.stderr)
        return 2
    try:
        mix = parse_style_mix(args.styles)
        fleet = FleetSimulator(args.vehicles, args.rate, args.batch_seconds, args.seed, args.device_prefix,
                               styles=mix, unique_boots=True)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    if args.max_rate and args.duration <= 0:
        print("simulate: --max-rate needs --duration > 0", file=sys.stderr)
        return 2
    target = MqttTarget(args.host, args.port, args.username, args.password, args.tls_ca)
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    mode = "max-rate" if args.max_rate else f"live x{args.speed:g}"
    print(f"simulate: {args.vehicles} vehicles at {args.rate:g} Hz, {fleet.samples_per_batch}-sample batches, "
          f"{mode}, to {args.host}:{args.port}", flush=True)
    if args.max_rate:
        print("simulate: encoding every payload first ...", flush=True)
    try:
        stats = fleet.run_live(target, args.duration or None, speed=args.speed, max_rate=args.max_rate,
                               max_inflight=args.max_inflight, stop=stop, workers=args.workers or os.cpu_count() or 1,
                               progress=lambda st: print(_progress_line(st, started), flush=True))
    except (ConnectionError, OSError) as exc:
        print(f"simulate: cannot publish to {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    d = stats.as_dict()
    print(_progress_line(stats, started), flush=True)
    print(f"simulate: done: {d['messages']} messages, {d['samples']} samples, {d['acked_messages']} acked, "
          f"{d['refused']} refused, {d['bytes']} bytes in {d['seconds']} s "
          f"({d['msgs_per_s']} msgs/s, {d['samples_per_s']} samples/s; encoding {d['encode_seconds']} s)"
          + (f"; last error: {d['last_error']}" if d["last_error"] else ""), flush=True)
    return 0 if stats.acked_messages == stats.messages else 1
