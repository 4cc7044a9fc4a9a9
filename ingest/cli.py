"""``vinsight db|device|ingest|simulate``: the ingest room's commands, one module per command group."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from . import cli_db, cli_device, cli_simulate, cli_worker

    cli_db.register(subparsers)  # vinsight db migrate|status|maintain
    cli_device.register(subparsers)  # vinsight device add|list|revoke|assign
    cli_worker.register(subparsers)  # vinsight ingest run
    cli_simulate.register(subparsers)  # vinsight simulate
