"""``vinsight demo``: a fleet of in-car agents on one machine, on embedded defaults.

It starts a private Mosquitto (MQTT v5) on a free port and runs every agent as its own process, the
way cars do: agents replaying real recorded drives (POLIDriving), and one agent reading an emulated
car (ELM327-emulator through python-obd) with trouble codes set. A console decodes everything the
fleet publishes with the wire contract and prints progress until Ctrl-C (or --duration), which stops
every process cleanly; agents' outboxes persist, so a second run continues, and --reset starts over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import time
from pathlib import Path

DEFAULT_HOME = Path(os.environ.get("VINSIGHT_DEMO_HOME", Path.home() / ".vinsight" / "demo"))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a fleet of in-car agents locally: private broker, real drives, an emulated car",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--home", type=Path, default=DEFAULT_HOME, help=f"demo state directory (default {DEFAULT_HOME})")
    p.add_argument("--reset", action="store_true", help="delete the demo's database and state first")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.add_argument("--replays", type=int, default=3, help="agents replaying recorded drives (default 3)")
    p.add_argument("--replay-speed", type=float, default=10.0, help="replay speed factor (default 10x)")
    p.add_argument("--no-emulator", action="store_true", help="skip the agent on the ELM327-emulator")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from .demo import Demo

    home: Path = args.home
    if args.reset and home.exists():
        print(f"demo: reset: removing {home}")
        shutil.rmtree(home)
    demo = Demo(home=home, replays=args.replays, replay_speed=args.replay_speed, emulator=not args.no_emulator)
    stop_at = time.monotonic() + args.duration if args.duration > 0 else None

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        demo.start()
        while stop_at is None or time.monotonic() < stop_at:
            demo.report_progress()
            time.sleep(5)
        return 0
    except KeyboardInterrupt:
        print("\ndemo: stopping")
        return 0
    finally:
        demo.stop()
