"""Device provisioning: who may connect to the broker, with which password, and to which topics.

The registry (``devices`` in PostgreSQL) is the single source of truth for broker credentials. A
device gets a random password once, at ``add``; only its Mosquitto hash is stored, so the database
never holds a usable secret. :func:`write_broker_files` turns the registry into Mosquitto's
``password_file`` and ``acl_file``; signalling the broker (SIGHUP) makes it reread them, so adding
or revoking a device never restarts the broker or drops the rest of the fleet (Mosquitto 2.0 checks
connected clients again on reload and disconnects a revoked one).

The hash is the one Mosquitto 2.0's ``mosquitto_passwd`` writes, ``$7$<iterations>$<salt>$<hash>``:
PBKDF2-HMAC-SHA512 with 101 iterations, a 12-byte random salt and a 64-byte derived key, both in
standard base64 with padding. 101 iterations is weak for human passwords, but ours are 192 random
bits (``secrets.token_urlsafe(24)``), where stretching adds nothing; and the broker recomputes the
hash at every CONNECT, so a fleet reconnecting at once must stay cheap.

Device ids double as broker usernames, so the ACL needs only the shared ``%u`` patterns from
:data:`vinsight.contract.topics.DEVICE_ACL_PATTERNS`: a device writes its own data and status trees
and reads its own commands, nothing else. Service accounts (ingest, the portal) get explicit
``user`` blocks instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import signal
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vinsight.contract.topics import CMD, DATA, DEVICE_ACL_PATTERNS, DEVICE_ID_RE, PREFIX, STATUS

if TYPE_CHECKING:
    import psycopg

# mosquitto_passwd (Mosquitto 2.0) defaults; the broker reads the iteration count from each hash.
HASH_ID = "7"
HASH_ITERATIONS = 101
SALT_BYTES = 12
KEY_BYTES = 64

VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
# Broker usernames of services: the same safe alphabet as devices (no ':' — the password file's
# separator — no whitespace, no '#'/'+', which would read as ACL wildcards through %u).
SERVICE_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SERVICE_ACL: tuple[str, ...] = (
    f"topic read {PREFIX}/{DATA}/#",
    f"topic read {PREFIX}/{STATUS}/#",
    f"topic write {PREFIX}/{CMD}/#",
)


class ProvisioningError(ValueError):
    """A request the registry refuses (bad id, duplicate, unknown device): the user's to fix."""


# --- password hashes ------------------------------------------------------------------------------


def generate_password() -> str:
    """192 random bits, URL-safe: survives env files, shell quoting and the password file format."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = HASH_ITERATIONS) -> str:
    """The ``$7$`` PBKDF2-SHA512 hash Mosquitto 2.x accepts in a ``password_file``.

    ``salt`` is only for tests that reproduce a hash ``mosquitto_passwd`` made; normally it is random.
    """
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, KEY_BYTES)
    return f"${HASH_ID}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """Check a password against a ``$7$`` hash the way the broker does (constant-time compare)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != HASH_ID or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        key = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(key))
    return hmac.compare_digest(candidate, key)


# --- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddedDevice:
    """What ``add`` hands back. ``password`` exists only here: the database keeps its hash."""

    device_key: int
    device_id: str
    password: str
    promoted: bool  # True when an 'auto' row (registered by ingest) was promoted

    def __iter__(self) -> Iterator[Any]:  # ``key, password = add_device(...)``
        return iter((self.device_key, self.password))


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise ProvisioningError(
            f"invalid device id {device_id!r}: 2-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
        )
    return device_id


def _connect(db_url: str) -> psycopg.Connection:
    import psycopg

    return psycopg.connect(db_url, connect_timeout=10)


def _upsert_owner(conn: psycopg.Connection, external_ref: str) -> int:
    row = conn.execute(
        "INSERT INTO owners (external_ref) VALUES (%s) ON CONFLICT (external_ref) DO UPDATE"
        " SET external_ref = EXCLUDED.external_ref RETURNING owner_id", (external_ref,)).fetchone()
    return int(row[0])


def _link_vehicle(conn: psycopg.Connection, device_key: int, current_vehicle: int | None, vin: str | None,
                  owner_ref: str | None) -> None:
    """Attach the device to a vehicle (created when the VIN is new) and the vehicle to an owner.

    Owners hang off vehicles, not devices, so an owner needs a vehicle: the given VIN or the one
    the device already reported. An owned vehicle is never silently handed to someone else.
    """
    vehicle_id = current_vehicle
    if vin is not None:
        row = conn.execute(
            "INSERT INTO vehicles (vin) VALUES (%s) ON CONFLICT (vin) DO UPDATE SET vin = EXCLUDED.vin"
            " RETURNING vehicle_id", (vin,)).fetchone()
        vehicle_id = int(row[0])
        conn.execute("UPDATE devices SET vehicle_id = %s WHERE device_key = %s", (vehicle_id, device_key))
    if owner_ref is None:
        return
    if vehicle_id is None:
        raise ProvisioningError("--owner needs --vin: owners are linked through the vehicle")
    owner_id = _upsert_owner(conn, owner_ref)
    row = conn.execute(
        "SELECT v.owner_id, o.external_ref FROM vehicles v LEFT JOIN owners o USING (owner_id)"
        " WHERE v.vehicle_id = %s FOR UPDATE OF v", (vehicle_id,)).fetchone()
    if row[0] is not None and row[0] != owner_id:
        raise ProvisioningError(f"the vehicle already belongs to owner {row[1] or row[0]!r}; not reassigning it")
    conn.execute("UPDATE vehicles SET owner_id = %s WHERE vehicle_id = %s", (owner_id, vehicle_id))


def add_device(db_url: str, device_id: str, *, vin: str | None = None, owner_ref: str | None = None,
               note: str = "") -> AddedDevice:
    """Provision a device: an 'active' row with a fresh password, whose plaintext is returned once.

    A device ingest registered on its own ('auto', from an open install or the simulator) is
    promoted, keeping its device_key and therefore its data. An 'active' id is refused (a second
    ``add`` would silently lock the first device out); so is a revoked id: revocation means that
    device's credentials were compromised or retired, and reusing its id would merge two histories.
    """
    check_device_id(device_id)
    if vin is not None:
        vin = vin.strip().upper()
        if not VIN_RE.match(vin):
            raise ProvisioningError(f"invalid VIN {vin!r}: 17 characters of A-Z (no I, O, Q) and 0-9")
    if owner_ref is not None:
        owner_ref = owner_ref.strip()
        if not owner_ref:
            raise ProvisioningError("owner reference is empty")
    password = generate_password()
    hashed = mosquitto_hash(password)
    with _connect(db_url) as conn, conn.transaction():
        select = "SELECT device_key, status, vehicle_id FROM devices WHERE device_id = %s FOR UPDATE"
        row = conn.execute(select, (device_id,)).fetchone()
        inserted = None
        if row is None:
            # ON CONFLICT: ingest (or another add) may register the same id between SELECT and INSERT.
            inserted = conn.execute(
                "INSERT INTO devices (device_id, status, password_hash, note) VALUES (%s, 'active', %s, %s)"
                " ON CONFLICT (device_id) DO NOTHING RETURNING device_key", (device_id, hashed, note)).fetchone()
            if inserted is None:
                row = conn.execute(select, (device_id,)).fetchone()
        if inserted is not None:
            device_key, vehicle_id = int(inserted[0]), None
        else:
            device_key, status, vehicle_id = int(row[0]), row[1], row[2]
            if status == "revoked":
                raise ProvisioningError(f"device {device_id!r} was revoked; revoked ids are not reused, pick a new id")
            if status == "active":
                raise ProvisioningError(f"device {device_id!r} is already provisioned")
            conn.execute(
                "UPDATE devices SET status = 'active', password_hash = %s,"
                " note = CASE WHEN %s <> '' THEN %s ELSE note END WHERE device_key = %s",
                (hashed, note, note, device_key))
        _link_vehicle(conn, device_key, vehicle_id, vin, owner_ref)
    return AddedDevice(device_key, device_id, password, promoted=inserted is None)


def list_devices(db_url: str) -> list[dict[str, Any]]:
    """Every device with its vehicle, owner and last known connection state (if it ever reported)."""
    with _connect(db_url) as conn:
        cur = conn.execute(
            "SELECT d.device_key, d.device_id, d.status, v.vin, o.external_ref AS owner, d.created_at,"
            " d.revoked_at, d.note, s.state, s.last_seen, (d.password_hash IS NOT NULL) AS has_password"
            " FROM devices d LEFT JOIN vehicles v USING (vehicle_id) LEFT JOIN owners o ON o.owner_id = v.owner_id"
            " LEFT JOIN device_status s ON s.device_key = d.device_key ORDER BY d.device_id")
        names = [c.name for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def revoke_device(db_url: str, device_id: str) -> None:
    """Withdraw a device's access: its hash is erased; its stored data and registry row stay.

    Takes effect at the broker with the next :func:`write_broker_files` and reload.
    """
    check_device_id(device_id)
    with _connect(db_url) as conn, conn.transaction():
        row = conn.execute("SELECT status FROM devices WHERE device_id = %s FOR UPDATE", (device_id,)).fetchone()
        if row is None:
            raise ProvisioningError(f"unknown device {device_id!r}")
        if row[0] == "revoked":
            raise ProvisioningError(f"device {device_id!r} is already revoked")
        conn.execute("UPDATE devices SET status = 'revoked', revoked_at = now(), password_hash = NULL"
                     " WHERE device_id = %s", (device_id,))


# --- broker files ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    devices: int
    service_users: int


def _atomic_write(path: Path, text: str, default_mode: int = 0o600) -> None:
    """Replace ``path`` whole, so a broker reloading mid-write never reads half a file.

    A regenerated file keeps the owner, group and (minus world bits) mode of the one it replaces:
    an operator who made it readable by the ``mosquitto`` group once need not redo it after every
    change. New files are 0600, which Mosquitto 2 accepts without a warning.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, owner = default_mode, None
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o770, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if owner is not None and hasattr(os, "fchown"):
                # Not root: the file stays ours, which is what a broker running as us needs anyway.
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), *owner)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_acl(service_users: list[str]) -> str:
    """The ACL: ``%u`` patterns for every device, then one ``user`` block per service.

    Mosquitto applies ``pattern`` lines to every client wherever they appear, and ``topic`` lines
    to the user named above them, so the patterns come first to read as what they are.
    """
    lines = ["# Generated by `vinsight device broker-files`; edits are overwritten.",
             "# Every client (%u = username = device id): its own data/status trees, its own commands.",
             *DEVICE_ACL_PATTERNS, ""]
    for name in service_users:
        lines += [f"user {name}", *SERVICE_ACL, ""]
    return "\n".join(lines)


def write_broker_files(db_url: str, password_file: Path, acl_file: Path, *,
                       service_users: Mapping[str, str] | None = None) -> BrokerFiles:
    """Regenerate Mosquitto's password and ACL files from the registry.

    Only 'active' devices with a hash get in: 'auto' devices were never given a password and
    revoked ones lost theirs. ``service_users`` maps a service's broker username to its plaintext
    password, hashed here so the database never needs service secrets. A service named like a
    device would receive that device's ``%u`` rights and share its password entry, so it is refused.
    """
    service_users = dict(service_users or {})
    for name in service_users:
        if not SERVICE_USER_RE.match(name):
            raise ProvisioningError(f"invalid service user name {name!r}")
        if not service_users[name]:
            raise ProvisioningError(f"service user {name!r} has an empty password")
    with _connect(db_url) as conn:
        rows = conn.execute("SELECT device_id, password_hash FROM devices WHERE status = 'active'"
                            " AND password_hash IS NOT NULL ORDER BY device_id").fetchall()
        if service_users:
            clash = conn.execute("SELECT device_id FROM devices WHERE device_id = ANY(%s)",
                                 (list(service_users),)).fetchall()
            if clash:
                raise ProvisioningError(f"service user {clash[0][0]!r} is also a device id; rename the service")
    entries = [f"{device_id}:{hashed}" for device_id, hashed in rows]
    entries += [f"{name}:{mosquitto_hash(pw)}" for name, pw in sorted(service_users.items())]
    _atomic_write(Path(password_file), "".join(e + "\n" for e in entries))
    _atomic_write(Path(acl_file), render_acl(sorted(service_users)))
    return BrokerFiles(devices=len(rows), service_users=len(service_users))


def reload_broker(pid_file: Path) -> int:
    """SIGHUP the Mosquitto whose ``pid_file`` this is: it rereads password and ACL files in place."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"cannot read a broker pid from {pid_file}: {exc}") from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise ProvisioningError(f"no process {pid} (from {pid_file}); is the broker running?") from exc
    return pid
