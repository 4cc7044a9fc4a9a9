"""``vinsight device ...``: provision devices and keep the broker's credentials in step with the registry.

A device connects to the broker with its device id as username and a password from ``device add``,
shown once (the registry keeps only its Mosquitto PBKDF2-SHA512 hash). The broker learns about
added and revoked devices from ``device broker-files``, which rewrites Mosquitto's password_file
and acl_file from the registry and, with --reload-pid-file, signals the broker (SIGHUP) to reread
them without a restart: other devices stay connected, a revoked one is disconnected.

    vinsight device add car-0001 --vin 1FA0ZZZ99ZTS39002 --owner app-user-42
    vinsight device list
    vinsight device revoke car-0001
    vinsight device broker-files --password-file /etc/mosquitto/vinsight.passwd \\
        --acl-file /etc/mosquitto/vinsight.acl --reload-pid-file /run/mosquitto/mosquitto.pid

The database URL comes from --db-url, else VINSIGHT_INGEST_DB_URL / VINSIGHT_DB_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2
EXIT_UNAVAILABLE = 1


def _db_url(args: argparse.Namespace) -> str:
    if args.db_url:
        return args.db_url
    from .settings import IngestSettings

    return IngestSettings().db_url


def _fail(message: str, code: int = EXIT_USER_ERROR) -> int:
    print(f"vinsight device: error: {message}", file=sys.stderr)
    return code


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """User errors and an unreachable or unmigrated database become one line on stderr, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        import psycopg

        from .provisioning import ProvisioningError

        try:
            return handler(args)
        except ProvisioningError as exc:
            return _fail(str(exc))
        except psycopg.errors.UndefinedTable:
            return _fail("the database has no VINsight schema yet; run `vinsight db migrate` first")
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _fail(f"cannot reach the database: {first}", EXIT_UNAVAILABLE)

    run.__name__ = handler.__name__
    return run


def cmd_add(args: argparse.Namespace) -> int:
    from .provisioning import add_device

    added = add_device(_db_url(args), args.device_id, vin=args.vin, owner_ref=args.owner, note=args.note)
    how = "promoted from auto-registered" if added.promoted else "provisioned"
    print(f"device {added.device_id} {how} (device_key {added.device_key}).")
    print("Its password is shown only now (the registry keeps just a hash). Put these lines in the device's")
    print("/etc/vinsight/agent.env:")
    print()
    print(f"VINSIGHT_AGENT_DEVICE_ID={added.device_id}")
    print(f"VINSIGHT_AGENT_MQTT_USERNAME={added.device_id}")
    print(f"VINSIGHT_AGENT_MQTT_PASSWORD={added.password}")
    print()
    print("Then update the broker: vinsight device broker-files --password-file ... --acl-file ... "
          "--reload-pid-file ...")
    return 0


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def cmd_list(args: argparse.Namespace) -> int:
    from .provisioning import list_devices

    rows = list_devices(_db_url(args))
    if args.json:
        print(json.dumps([_jsonable(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no devices")
        return 0
    header = ("DEVICE", "STATUS", "VIN", "OWNER", "STATE", "LAST SEEN", "CREATED", "REVOKED")

    def when(v: Any) -> str:
        return v.strftime("%Y-%m-%d %H:%M") if v is not None else "-"

    table = [header] + [
        (r["device_id"], r["status"], r["vin"] or "-", r["owner"] or "-", r["state"] or "-", when(r["last_seen"]),
         when(r["created_at"]), when(r["revoked_at"]))
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from .provisioning import revoke_device

    revoke_device(_db_url(args), args.device_id)
    print(f"device {args.device_id} revoked; its stored data stays. Run `vinsight device broker-files` "
          "(with --reload-pid-file) so the broker refuses it.")
    return 0


def _service_users(args: argparse.Namespace) -> dict[str, str]:
    """Service accounts: the ingest one from its settings, plus --service-user/--service-password-env pairs.

    Passwords come from environment variables, never from flags, which any user can read in ``ps``.
    """
    from .provisioning import ProvisioningError

    users: dict[str, str] = {}
    if not args.no_ingest_user:
        from .settings import IngestSettings

        ingest = IngestSettings()
        if ingest.mqtt_username and ingest.mqtt_password:
            users[ingest.mqtt_username] = ingest.mqtt_password
    names, envs = args.service_user or [], args.service_password_env or []
    if len(names) != len(envs):
        raise ProvisioningError("give one --service-password-env for each --service-user")
    for name, env in zip(names, envs, strict=True):
        password = os.environ.get(env)
        if not password:
            raise ProvisioningError(f"environment variable {env} (password of service user {name!r}) is not set")
        users[name] = password
    return users


def cmd_broker_files(args: argparse.Namespace) -> int:
    from .provisioning import reload_broker, write_broker_files

    users = _service_users(args)
    written = write_broker_files(_db_url(args), args.password_file, args.acl_file, service_users=users)
    print(f"wrote {args.password_file} ({written.devices} devices, {written.service_users} service users) "
          f"and {args.acl_file}")
    if not users:
        print("warning: no service user: ingest will not be allowed to subscribe (set VINSIGHT_INGEST_MQTT_USERNAME"
              " and VINSIGHT_INGEST_MQTT_PASSWORD, or pass --service-user)", file=sys.stderr)
    if args.reload_pid_file:
        pid = reload_broker(args.reload_pid_file)
        print(f"sent SIGHUP to the broker (pid {pid}); it rereads both files")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    device = subparsers.add_parser(
        "device", help="provision devices and write the broker's password and ACL files",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = device.add_subparsers(dest="device_command", metavar="SUBCOMMAND", required=True)

    def db_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db-url", default=None,
                       help="PostgreSQL URL (default: env VINSIGHT_INGEST_DB_URL or VINSIGHT_DB_URL)")

    add = sub.add_parser(
        "add", help="provision a device and print its password (once)",
        description="Create a device (or promote one ingest auto-registered) with a fresh random password. "
                    "The password is printed once, as agent.env lines; only its hash is stored. Revoked ids "
                    "cannot be reused.")
    add.add_argument("device_id", help="device id and MQTT username: 2-64 of a-z 0-9 - _")
    add.add_argument("--vin", help="link the device to this vehicle (created when new)")
    add.add_argument("--owner", help="the vehicle owner's external reference (app account id); needs a vehicle")
    add.add_argument("--note", default="", help="free text kept with the device")
    db_flag(add)
    add.set_defaults(func=_guarded(cmd_add))

    lst = sub.add_parser("list", help="every device with status, vehicle, owner and last seen",
                         description="List devices: status, VIN, owner, connection state and last message time.")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    db_flag(lst)
    lst.set_defaults(func=_guarded(cmd_list))

    rev = sub.add_parser("revoke", help="withdraw a device's broker access (its data stays)",
                         description="Mark a device revoked and erase its password hash. The broker refuses it "
                                     "after the next `device broker-files` with a reload.")
    rev.add_argument("device_id")
    db_flag(rev)
    rev.set_defaults(func=_guarded(cmd_revoke))

    bf = sub.add_parser(
        "broker-files", help="rewrite Mosquitto's password_file and acl_file from the registry",
        description="Write Mosquitto's password_file (active devices, plus service users) and acl_file (each "
                    "device may write vinsight/v1/data/<id>/# and vinsight/v1/status/<id>/# and read "
                    "vinsight/v1/cmd/<id>/#; service users read all data and status and write commands). "
                    "Files are replaced atomically, 0600 when new, keeping the owner and mode of the files "
                    "they replace. The ingest service user comes from VINSIGHT_INGEST_MQTT_USERNAME / "
                    "VINSIGHT_INGEST_MQTT_PASSWORD when both are set.")
    bf.add_argument("--password-file", type=Path, required=True, help="Mosquitto password_file to write")
    bf.add_argument("--acl-file", type=Path, required=True, help="Mosquitto acl_file to write")
    bf.add_argument("--reload-pid-file", type=Path, default=None,
                    help="the broker's pid_file: send it SIGHUP so it rereads both files")
    bf.add_argument("--service-user", action="append", metavar="NAME",
                    help="another service account (repeatable), e.g. the portal")
    bf.add_argument("--service-password-env", action="append", metavar="VAR",
                    help="environment variable holding the password of the matching --service-user")
    bf.add_argument("--no-ingest-user", action="store_true",
                    help="do not add the ingest service user from the VINSIGHT_INGEST_MQTT_* settings")
    db_flag(bf)
    bf.set_defaults(func=_guarded(cmd_broker_files))
