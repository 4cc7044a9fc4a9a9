"""The one access layer every portal endpoint goes through.

An endpoint declares *what* it does (a permission) and *which personal data* it reads (a consent
scope): ``access: Access = Depends(guard("dealer.vehicles", Scope.VEHICLE_HEALTH))``. The guard

1. authenticates the caller (bearer access token of a person, or an API key of an organisation's
   server) and re-reads their organisation and role from the database, so revocation and
   deactivation are effective on the next request;
2. checks the permission against :data:`PERMISSIONS` (audience and role) — 403 otherwise;
3. rate-limits the client (429 with Retry-After);
4. hands the endpoint an :class:`Access` bound to one database transaction, whose only way to
   read vehicle data is :meth:`Access.fetch` with SQL that joins the ``visible`` relation: the
   vehicles the caller may see *for that scope right now* (the owner's own vehicles for a driver;
   for an organisation, vehicles whose owner has an active, unexpired, unrevoked consent to it
   naming the scope). A vehicle outside it is reported as not found, never as forbidden, so its
   existence does not leak.
5. writes the audit trail: every organisation read of personal data records who, whose vehicle,
   which scope, which purpose (the consent's), and how many records — in the same transaction as
   the read, so there is no read without its audit row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio
import anyio.to_thread
import psycopg
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .problems import Problem
from .security import api_key_matches, read_token, split_api_key
from .settings import PortalSettings


class Scope(StrEnum):
    """What an owner can consent to, each a kind of personal data."""

    VEHICLE_HEALTH = "vehicle_health"      # trouble codes, battery, coolant, service due, mileage
    SERVICE_CONTACT = "service_contact"    # a dealer may turn health into leads and call the owner
    DRIVING_SCORE = "driving_score"        # scores, components, risk events (without places)
    MILEAGE = "mileage"                    # distance per period (pay as you drive)
    TRIP_SUMMARY = "trip_summary"          # trips without coordinates
    LOCATION_HISTORY = "location_history"  # tracks, start/end points, event places


class Audience(StrEnum):
    DEALER = "dealer"
    INSURER = "insurer"
    DRIVER = "driver"


ROLES_BY_AUDIENCE: dict[Audience, frozenset[str]] = {
    Audience.DEALER: frozenset({"admin", "analyst", "service_advisor", "sales"}),
    Audience.INSURER: frozenset({"admin", "analyst", "underwriter"}),
    Audience.DRIVER: frozenset({"driver"}),
}

_D, _I, _O = Audience.DEALER, Audience.INSURER, Audience.DRIVER
# permission -> the (audience, role) pairs that hold it. The single table the authorisation matrix
# test enumerates.
PERMISSIONS: dict[str, frozenset[tuple[Audience, str]]] = {
    "dealer.vehicles": frozenset({(_D, "admin"), (_D, "analyst"), (_D, "service_advisor"), (_D, "sales")}),
    "dealer.leads.read": frozenset({(_D, "admin"), (_D, "service_advisor"), (_D, "sales"), (_D, "analyst")}),
    "dealer.leads.write": frozenset({(_D, "admin"), (_D, "service_advisor"), (_D, "sales")}),
    "dealer.service.write": frozenset({(_D, "admin"), (_D, "service_advisor")}),
    "insurer.policyholders": frozenset({(_I, "admin"), (_I, "analyst"), (_I, "underwriter")}),
    "insurer.portfolio": frozenset({(_I, "admin"), (_I, "analyst"), (_I, "underwriter")}),
    "dealer.admin": frozenset({(_D, "admin")}),
    "org.admin": frozenset({(_D, "admin"), (_I, "admin")}),
    "org.feed": frozenset({(_D, "admin"), (_D, "analyst"), (_I, "admin"), (_I, "analyst"), (_I, "underwriter")}),
    "org.read": frozenset({(a, r) for a in (_D, _I) for r in ROLES_BY_AUDIENCE[a]}),
    "me": frozenset({(_O, "driver")}),
    "any": frozenset({(a, r) for a in (_D, _I, _O) for r in ROLES_BY_AUDIENCE[a]}),
}


@dataclass(frozen=True, slots=True)
class Caller:
    kind: str               # "user" or "api_key"
    id: int
    label: str              # e-mail or key name (audit)
    role: str
    audience: Audience
    org_id: int | None = None
    owner_id: int | None = None

    @property
    def client_key(self) -> str:
        return f"{self.kind}:{self.id}"


class RateLimiter:
    """Token bucket per client: ``rate_per_min`` requests a minute, bursts up to the same size."""

    def __init__(self, rate_per_min: int) -> None:
        self.rate = rate_per_min / 60.0
        self.capacity = float(rate_per_min)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when allowed; else seconds until the next request would be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


@dataclass
class PortalState:
    settings: PortalSettings
    pool: ConnectionPool
    limiter: RateLimiter
    login_limiter: RateLimiter
    gate: anyio.Semaphore | None = None  # admission to the pool for guarded requests (see guard)


def state(request: Request) -> PortalState:
    return request.app.state.portal


def _credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return "bearer", value.strip()
    if scheme.lower() == "apikey" and value.strip():
        return "api_key", value.strip()
    key = request.headers.get("x-api-key")
    if key:
        return "api_key", key.strip()
    return None


_UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="vinsight"'}


def authenticate(conn: psycopg.Connection, st: PortalState, request: Request) -> Caller:
    cred = _credentials(request)
    if cred is None:
        raise Problem(401, "not-authenticated", "Send 'Authorization: Bearer <token>' (POST /v1/auth/token) "
                      "or an API key in 'X-API-Key'.", headers=_UNAUTHENTICATED)
    kind, value = cred
    if kind == "bearer":
        user_id = read_token(st.settings.jwt_secret, value)
        row = None if user_id is None else conn.execute(
            "SELECT u.user_id, u.email, u.role, u.org_id, u.owner_id, o.kind AS org_kind FROM portal_users u"
            " LEFT JOIN organisations o ON o.org_id = u.org_id WHERE u.user_id = %s AND u.active",
            (user_id,)).fetchone()
        if row is None:
            raise Problem(401, "invalid-token", "The access token is invalid, expired, or its user is deactivated.",
                          headers=_UNAUTHENTICATED)
        audience = Audience.DRIVER if row["role"] == "driver" else Audience(row["org_kind"])
        return Caller("user", row["user_id"], row["email"], row["role"], audience, row["org_id"], row["owner_id"])
    parts = split_api_key(value)
    row = None if parts is None else conn.execute(
        "SELECT k.key_id, k.name, k.key_hash, k.role, k.org_id, o.kind AS org_kind FROM api_keys k"
        " JOIN organisations o ON o.org_id = k.org_id WHERE k.prefix = %s AND k.revoked_at IS NULL",
        (parts[0],)).fetchone()
    if row is None or parts is None or not api_key_matches(row["key_hash"], parts[1]):
        raise Problem(401, "invalid-api-key", "The API key is unknown or revoked.", headers=_UNAUTHENTICATED)
    return Caller("api_key", row["key_id"], row["name"], row["role"], Audience(row["org_kind"]), row["org_id"])


@dataclass
class Access:
    """A caller, one transaction, and the scope the endpoint reads under."""

    caller: Caller
    conn: psycopg.Connection
    scope: Scope | None
    action: str
    _audited: set[tuple[int | None, int | None, str]] = field(default_factory=set)
    _pending: list[tuple[str, int | None, int | None, int, str]] = field(default_factory=list)

    # --- the visible relation ------------------------------------------------------------------------
    def visible_sql(self, scope: Scope | None = None, tag: str = "") -> tuple[str, dict[str, Any]]:
        """SQL for (vehicle_id, owner_id, purpose): the vehicles readable under ``scope``, now.

        ``tag`` suffixes the parameter names so two visible relations can sit in one statement."""
        scope = scope or self.scope
        if scope is None:
            raise RuntimeError("this endpoint declared no consent scope")
        c = self.caller
        if c.audience is Audience.DRIVER:
            return ("SELECT v.vehicle_id, v.owner_id, 'owner'::text AS purpose FROM vehicles v"
                    f" WHERE v.owner_id = %(_owner{tag})s", {f"_owner{tag}": c.owner_id})
        return ("SELECT DISTINCT ON (v.vehicle_id) v.vehicle_id, v.owner_id, c.purpose FROM vehicles v"
                " JOIN consents c ON c.owner_id = v.owner_id"
                f" WHERE c.org_id = %(_org{tag})s AND %(_scope{tag})s = ANY (c.scopes) AND c.revoked_at IS NULL"
                " AND c.starts_at <= now() AND (c.expires_at IS NULL OR c.expires_at > now())"
                " ORDER BY v.vehicle_id, c.starts_at DESC", {f"_org{tag}": c.org_id, f"_scope{tag}": str(scope)})

    def fetch(self, sql: str, params: dict[str, Any] | None = None, *, scope: Scope | None = None,
              audit: bool = True) -> list[dict[str, Any]]:
        """Run ``sql`` with ``visible`` defined as a CTE; rows need ``vehicle_id`` to be audited.

        The SQL must read ``visible``: that is the rule that makes this the only path to vehicle
        data. Each row returned counts as a record read for the audit log.
        """
        if "visible" not in sql:
            raise RuntimeError("portal queries of vehicle data must join the visible relation")
        vis, vis_params = self.visible_sql(scope)
        rows = self.conn.execute(f"WITH visible AS MATERIALIZED ({vis}) {sql}",
                                 {**vis_params, **(params or {})}).fetchall()
        if audit:
            self.audit_rows(rows, scope or self.scope)
        return rows

    def can_see(self, vehicle_id: int, scope: Scope) -> dict[str, Any] | None:
        """The visible row (vehicle_id, owner_id, purpose) of ``vehicle_id`` under ``scope``, or None."""
        vis, params = self.visible_sql(scope)
        return self.conn.execute(f"SELECT * FROM ({vis}) x WHERE x.vehicle_id = %(_v)s",
                                 {**params, "_v": vehicle_id}).fetchone()

    def require_vehicle(self, vehicle_id: int, scope: Scope | None = None) -> dict[str, Any]:
        vis, params = self.visible_sql(scope)
        row = self.conn.execute(f"SELECT * FROM ({vis}) x WHERE x.vehicle_id = %(_v)s",
                                {**params, "_v": vehicle_id}).fetchone()
        if row is None:
            raise Problem(404, "vehicle-not-found", f"No vehicle {vehicle_id} is visible to you under "
                          f"'{scope or self.scope}' (unknown, or no active consent).")
        return row

    # --- audit ---------------------------------------------------------------------------------------
    def audit_rows(self, rows: Sequence[dict[str, Any]], scope: Scope | None) -> None:
        if self.caller.audience is Audience.DRIVER or scope is None:
            return  # an owner reading their own data is not an access by someone else
        counts: dict[tuple[int | None, int | None], tuple[int, str]] = {}
        for r in rows:
            vid = r.get("vehicle_id")
            if vid is None:
                continue
            key = (r.get("owner_id"), vid)
            n, _ = counts.get(key, (0, ""))
            counts[key] = (n + 1, r.get("purpose") or "")
        if not counts:
            return
        self.record(scope, [(o, v, n, p) for (o, v), (n, p) in counts.items()])

    def record(self, scope: Scope, entries: Sequence[tuple[int | None, int | None, int, str]]) -> None:
        """Audit rows (owner, vehicle, records, purpose) for one read.

        Kept until :meth:`flush_audit`, which the guard calls before it commits the request's
        transaction: the rows land in the same transaction as the reads, in one statement whatever
        the number of reads and vehicles (a dealer overview page audits dozens, under two scopes)."""
        self._pending.extend((str(scope), o, v, n, p) for o, v, n, p in entries)

    def flush_audit(self) -> None:
        """Write the audit rows recorded so far (one INSERT), in the current transaction."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        c = self.caller
        self.conn.execute(
            "INSERT INTO audit_log (actor_kind, actor_id, actor_label, org_id, scope, action, owner_id, vehicle_id,"
            " records, purpose) SELECT %s, %s, %s, %s, s, %s, o, v, n, p"
            " FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::int[], %s::text[]) AS x(s, o, v, n, p)",
            (c.kind, c.id, c.label, c.org_id, self.action, [e[0] for e in pending], [e[1] for e in pending],
             [e[2] for e in pending], [e[3] for e in pending], [e[4] for e in pending]))


def _open(request: Request, allowed: frozenset[tuple[Audience, str]], permission: str,
          scope: Scope | None) -> tuple[AbstractContextManager[psycopg.Connection], Access]:
    """Steps 1-4 in a worker thread: a pooled connection (its transaction), the caller, the checks."""
    st = state(request)
    cm = st.pool.connection()
    conn = cm.__enter__()
    try:
        conn.row_factory = dict_row
        caller = authenticate(conn, st, request)
        if (caller.audience, caller.role) not in allowed:
            raise Problem(403, "forbidden", f"Your role '{caller.role}' ({caller.audience}) may not use "
                          f"'{permission}'.")
        wait = st.limiter.take(caller.client_key)
        if wait > 0:
            raise Problem(429, "rate-limited", f"Too many requests; retry in {wait:.1f} s.",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        route = request.scope.get("route")
        action = getattr(route, "operation_id", None) or getattr(route, "name", None) or request.url.path
        return cm, Access(caller, conn, scope, action)
    except BaseException as exc:
        cm.__exit__(type(exc), exc, exc.__traceback__)  # rolls back, returns the connection
        raise


def _close(cm: AbstractContextManager[psycopg.Connection], access: Access) -> None:
    """Step 5 and the commit: the request's audit rows, then its transaction (rolled back on error)."""
    try:
        access.flush_audit()
    except BaseException as exc:
        cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    cm.__exit__(None, None, None)


def guard(permission: str, scope: Scope | None = None) -> Callable[..., AsyncIterator[Access]]:
    """The dependency every data endpoint takes (see the module docstring).

    The blocking work (pool, queries) runs in worker threads, but the wait for one of the pool's
    connections happens here, on the event loop, behind a semaphore of the pool's size. Waiting in
    a worker thread instead (a sync dependency) deadlocks under load: once more requests wait for a
    connection than there are worker threads, the requests holding the connections find no thread
    to run their endpoint in, and everything stalls until the pool times out.
    """
    allowed = PERMISSIONS[permission]

    async def dependency(request: Request) -> AsyncIterator[Access]:
        st = state(request)
        if st.gate is None:
            st.gate = anyio.Semaphore(st.pool.max_size)
        async with st.gate:
            cm, access = await run_in_threadpool(_open, request, allowed, permission, scope)
            # As FastAPI exits sync dependencies: shielded, and without waiting for thread capacity.
            try:
                yield access
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(cm.__exit__, type(exc), exc, exc.__traceback__,
                                                   limiter=anyio.CapacityLimiter(1))
                raise
            else:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_close, cm, access, limiter=anyio.CapacityLimiter(1))

    dependency.__name__ = f"guard_{permission.replace('.', '_')}"
    dependency.permission = permission  # type: ignore[attr-defined]  # read by the authorisation matrix test
    dependency.scope = scope  # type: ignore[attr-defined]
    return dependency
