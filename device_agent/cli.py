"""``vinsight agent ...``: run the in-car agent, replay a recorded drive, inspect the outbox."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--device-id", "device_id", str, "device identity and MQTT username"),
    ("--state-dir", "state_dir", Path, "outbox, PID cache and applied configuration"),
    ("--obd-port", "obd_port", str, "ELM327: /dev/ttyUSB0, /dev/rfcomm0 or socket://host:port"),
    ("--obd-baudrate", "obd_baudrate", int, "serial speed; 38400 over TCP"),
    ("--gps-mode", "gps_mode", str, "gpsd, nmea or none"),
    ("--mqtt-host", "mqtt_host", str, "broker host"),
    ("--mqtt-port", "mqtt_port", int, "broker port"),
    ("--batch-max-samples", "batch_max_samples", int, "publish a batch at this many samples"),
    ("--batch-max-age", "batch_max_age_s", float, "... or when the oldest is this many seconds old"),
)


def _add_flags(p: argparse.ArgumentParser) -> None:
    for flag, dest, kind, text in FLAGS:
        p.add_argument(flag, dest=dest, type=kind, default=None, help=f"{text} (env VINSIGHT_AGENT_{dest.upper()})")


def _settings(args: argparse.Namespace, **extra: Any):
    from .settings import AgentSettings

    overrides = {dest: getattr(args, dest) for _f, dest, _k, _t in FLAGS if getattr(args, dest, None) is not None}
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return AgentSettings(**overrides)


def _run_agent(settings: Any, replay_file: Path | None = None, exit_when_replayed: bool = False) -> int:
    from .agent import Agent

    agent = Agent(settings, replay_file=replay_file)

    def _stop(_signum: int, _frame: object) -> None:
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run(exit_when_replayed=exit_when_replayed)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _run_agent(_settings(args))


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args, replay_speed=args.speed)
    return _run_agent(settings, replay_file=args.file, exit_when_replayed=not args.keep_running)


def cmd_status(args: argparse.Namespace) -> int:
    from .outbox import Outbox

    settings = _settings(args)
    outbox = Outbox(Path(settings.state_dir) / "outbox.sqlite3", settings.outbox_max_bytes)
    print(json.dumps({"device_id": settings.device_id, **outbox.stats(),
                      "applied_config": json.loads(outbox.get_meta("config") or "null")}, indent=2))
    outbox.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    agent = subparsers.add_parser(
        "agent", help="the in-car agent (OBD-II + GPS -> disk -> MQTT)",
        description="The in-car agent. Settings come from VINSIGHT_AGENT_* environment variables "
                    "(see hardware/agent.env.example); flags override them.")
    sub = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)

    run = sub.add_parser("run", help="read the car (ELM327) and GPS and publish",
                         description="Run the agent against a real ELM327 and GPS receiver until SIGTERM.")
    _add_flags(run)
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="play a recorded drive through the agent instead of a car",
                            description="Replay a POLIDriving *_col.csv(.gz) log through the agent's recorder, "
                                        "outbox and publisher; timestamps are shifted so the drive ends now.")
    replay.add_argument("file", type=Path, help="the recorded drive")
    replay.add_argument("--speed", type=float, default=1.0, help="playback factor; 0 = as fast as possible")
    replay.add_argument("--keep-running", action="store_true", help="stay connected after the drive ends")
    _add_flags(replay)
    replay.set_defaults(func=cmd_replay)

    status = sub.add_parser("status", help="show the outbox: records waiting, oldest, dropped",
                            description="Read the outbox on disk (works while the agent runs).")
    _add_flags(status)
    status.set_defaults(func=cmd_status)
