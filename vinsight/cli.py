"""The ``vinsight`` command line: one entry point, one subcommand group per room.

Each room (``device_agent``, ``ingest``, ``analytics``, ``portal_api``) exposes
``register(subparsers)`` in its ``cli`` module and keeps heavy imports inside the command handlers,
so ``vinsight --help`` works on a Pi that has only the ``device`` extra installed. A room whose
dependencies are missing still appears, and says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__

# (module with register(), extra that provides its dependencies)
ROOMS: tuple[tuple[str, str], ...] = (
    ("device_agent.cli", "device"),
    ("ingest.cli", "server"),
    ("ingest.device_cli", "server"),
    ("analytics.cli", "server"),
    ("portal_api.cli", "server"),
    ("vinsight.simulate_cli", "server"),
    ("vinsight.demo_cli", "all"),
)


def _missing_room(subparsers: argparse._SubParsersAction, module: str, extra: str, error: Exception) -> None:
    name = module.split(".")[0].replace("_", "-")

    def explain(_args: argparse.Namespace) -> int:
        print(f"{name} needs the '{extra}' extra: pip install 'vinsight[{extra}]' ({error})", file=sys.stderr)
        return 2

    p = subparsers.add_parser(name, help=f"(unavailable: install vinsight[{extra}])")
    p.set_defaults(func=explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vinsight",
        description=(
            "VINsight telematics. Every setting can also come from VINSIGHT_* environment variables; "
            "see each command's --help."
        ),
    )
    parser.add_argument("--version", action="version", version=f"vinsight {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, extra in ROOMS:
        try:
            room = importlib.import_module(module)
            room.register(subparsers)
        except ModuleNotFoundError as exc:
            # The room itself is absent from this install (not just a dependency of it).
            if exc.name is not None and (exc.name == module or module.startswith(exc.name + ".")):
                continue
            _missing_room(subparsers, module, extra, exc)
            continue
        except ImportError as exc:
            _missing_room(subparsers, module, extra, exc)
            continue
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .logs import configure_logging

    configure_logging(args.log_level, json_lines=args.log_json)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("vinsight").info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
