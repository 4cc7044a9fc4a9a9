"""The one access layer every portal endpoint goes through.

An endpoint declares *what* it does (a permission) and *which personal data* it reads (a consent
scope): ``access: Access = Depends(guard("dealer.vehicles", Scope.VEHICLE_HEALTH))``. The guard

1. authenticates the caller (bearer access token of a person, or an API key of an organisation's
   server): signature and expiry on the event loop, before the parameters are validated; then
   their organisation and role re-read from the database, so revocation and deactivation are
   effective on the next request;
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

Steps 1 (its database half) to 5 and the endpoint itself run in one worker thread
(:class:`GuardedRoute`, the route class of every portal router): one hand-over from the event
loop per request, not one per step.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import psycopg
from fastapi import Request
from fastapi.routing import APIRoute
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


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the request presented, checked as far as can be without the database."""

    kind: str                           # "bearer" or "api_key"
    user_id: int | None = None          # bearer: the token's subject (signature and expiry verified)
    key: tuple[str, str] | None = None  # api_key: (prefix, secret)


def check_credentials(st: PortalState, request: Request) -> Credentials:
    """Step 1 without I/O: a token's signature and expiry, an API key's form (401 otherwise).

    Runs on the event loop, before the request's parameters are validated, so a request without
    valid credentials is answered 401 whatever else is wrong with it."""
    cred = _credentials(request)
    if cred is None:
        raise Problem(401, "not-authenticated", "Send 'Authorization: Bearer <token>' (POST /v1/auth/token) "
                      "or an API key in 'X-API-Key'.", headers=_UNAUTHENTICATED)
    kind, value = cred
    if kind == "bearer":
        user_id = read_token(st.settings.jwt_secret, value)
        if user_id is None:
            raise _invalid_token()
        return Credentials("bearer", user_id=user_id)
    parts = split_api_key(value)
    if parts is None:
        raise _invalid_key()
    return Credentials("api_key", key=parts)


def _invalid_token() -> Problem:
    return Problem(401, "invalid-token", "The access token is invalid, expired, or its user is deactivated.",
                   headers=_UNAUTHENTICATED)


def _invalid_key() -> Problem:
    return Problem(401, "invalid-api-key", "The API key is unknown or revoked.", headers=_UNAUTHENTICATED)


def authenticate(conn: psycopg.Connection, creds: Credentials) -> Caller:
    """Step 1 with the database: the user or key re-read, so deactivation, revocation and role
    changes take effect on the next request."""
    if creds.kind == "bearer":
        row = conn.execute(
            "SELECT u.user_id, u.email, u.role, u.org_id, u.owner_id, o.kind AS org_kind FROM portal_users u"
            " LEFT JOIN organisations o ON o.org_id = u.org_id WHERE u.user_id = %s AND u.active",
            (creds.user_id,)).fetchone()
        if row is None:
            raise _invalid_token()
        audience = Audience.DRIVER if row["role"] == "driver" else Audience(row["org_kind"])
        return Caller("user", row["user_id"], row["email"], row["role"], audience, row["org_id"], row["owner_id"])
    assert creds.key is not None
    row = conn.execute(
        "SELECT k.key_id, k.name, k.key_hash, k.role, k.org_id, o.kind AS org_kind FROM api_keys k"
        " JOIN organisations o ON o.org_id = k.org_id WHERE k.prefix = %s AND k.revoked_at IS NULL",
        (creds.key[0],)).fetchone()
    if row is None or not api_key_matches(row["key_hash"], creds.key[1]):
        raise _invalid_key()
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
        # Per vehicle, its owner's newest active consent to this organisation naming the scope (an
        # index probe on consents (org_id, owner_id)). Written as a lateral join rather than a
        # DISTINCT ON over the whole organisation, so that a page (``vehicle_id > cursor ORDER BY
        # vehicle_id LIMIT n``) walks the vehicles' primary key and stops after n: the cost of a
        # page does not grow with the number of customers.
        return ("SELECT v.vehicle_id, v.owner_id, c.purpose FROM vehicles v CROSS JOIN LATERAL ("
                " SELECT c.purpose FROM consents c"
                f" WHERE c.org_id = %(_org{tag})s AND c.owner_id = v.owner_id AND %(_scope{tag})s = ANY (c.scopes)"
                " AND c.revoked_at IS NULL AND c.starts_at <= now() AND (c.expires_at IS NULL OR c.expires_at > now())"
                " ORDER BY c.starts_at DESC LIMIT 1) c", {f"_org{tag}": c.org_id, f"_scope{tag}": str(scope)})

    def fetch(self, sql: str, params: dict[str, Any] | None = None, *, scope: Scope | None = None,
              audit: bool = True) -> list[dict[str, Any]]:
        """Run ``sql`` with ``visible`` defined as a CTE; rows need ``vehicle_id`` to be audited.

        The SQL must read ``visible``: that is the rule that makes this the only path to vehicle
        data. Each row returned counts as a record read for the audit log.
        """
        if "visible" not in sql:
            raise RuntimeError("portal queries of vehicle data must join the visible relation")
        vis, vis_params = self.visible_sql(scope)
        # Not MATERIALIZED: the planner folds the relation into the query, so the page's keyset
        # condition and LIMIT reach the vehicles scan.
        rows = self.conn.execute(f"WITH visible AS ({vis}) {sql}",
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
        """Write the audit rows recorded so far (one INSERT), in the current transaction.

        The rows travel as one JSON array (orjson), which PostgreSQL unpacks with
        json_to_recordset: adapting five Python lists of a hundred values into arrays cost more
        than the insert itself."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        c = self.caller
        self.conn.execute(
            "INSERT INTO audit_log (actor_kind, actor_id, actor_label, org_id, scope, action, owner_id, vehicle_id,"
            " records, purpose) SELECT %s, %s, %s, %s, x.s, %s, x.o, x.v, x.n, x.p"
            " FROM json_to_recordset(%s::json) AS x(s text, o bigint, v bigint, n int, p text)",
            (c.kind, c.id, c.label, c.org_id, self.action,
             orjson.dumps([{"s": s, "o": o, "v": v, "n": n, "p": p} for s, o, v, n, p in pending]).decode()))


@dataclass
class PendingAccess:
    """What the guard hands FastAPI: everything needed to open the request's :class:`Access`.

    The endpoint never sees it: :class:`GuardedRoute` opens it in the endpoint's worker thread,
    passes the endpoint the :class:`Access`, and finishes it there (one thread hop per request)."""

    request: Request
    allowed: frozenset[tuple[Audience, str]]
    permission: str
    scope: Scope | None
    creds: Credentials
    opened: Access | None = None

    def open(self) -> Access:
        """Steps 1-4 (blocking): a pooled connection (its transaction), the caller, the checks."""
        st = state(self.request)
        conn = st.pool.getconn()
        try:
            # A read (GET) needs no transaction of its own: under READ COMMITTED every statement sees
            # its own snapshot either way, and its one write, the audit rows, is a single statement
            # that is durable before the response leaves. Autocommit saves the BEGIN and COMMIT
            # round trips. Writes (POST, PATCH, DELETE) run in one transaction, committed at the end.
            conn.autocommit = self.request.method in ("GET", "HEAD")
            conn.row_factory = dict_row
            caller = authenticate(conn, self.creds)
            if (caller.audience, caller.role) not in self.allowed:
                raise Problem(403, "forbidden", f"Your role '{caller.role}' ({caller.audience}) may not use "
                              f"'{self.permission}'.")
            wait = st.limiter.take(caller.client_key)
            if wait > 0:
                raise Problem(429, "rate-limited", f"Too many requests; retry in {wait:.1f} s.",
                              headers={"Retry-After": str(max(1, int(wait + 0.999)))})
            route = self.request.scope.get("route")
            action = getattr(route, "operation_id", None) or getattr(route, "name", None) or self.request.url.path
        except BaseException:
            _give_back(st.pool, conn, commit=False)
            raise
        self.opened = Access(caller, conn, self.scope, action)
        return self.opened

    def authorise(self) -> None:
        """Steps 1-3 alone (the request is answered otherwise): raises what :meth:`open` would."""
        self.open()
        self.finish(False)

    def finish(self, ok: bool) -> None:
        """Step 5 (blocking): the audit rows and the commit, or the rollback; the connection goes back."""
        access, self.opened = self.opened, None
        if access is None:
            return
        pool = state(self.request).pool
        try:
            if ok:
                access.flush_audit()
        except BaseException:
            _give_back(pool, access.conn, commit=False)
            raise
        _give_back(pool, access.conn, commit=ok)


def _give_back(pool: ConnectionPool, conn: psycopg.Connection, *, commit: bool) -> None:
    try:
        if commit:
            conn.commit()
        else:
            conn.rollback()
        conn.autocommit = False  # as the pool's other users expect it
    finally:
        pool.putconn(conn)


def guard(permission: str, scope: Scope | None = None) -> Callable[..., Awaitable[PendingAccess]]:
    """The dependency every data endpoint takes (see the module docstring).

    On the event loop it only checks the credentials (no I/O) and hands over a
    :class:`PendingAccess`; the blocking part (connection, user re-read, checks, the endpoint,
    audit, commit) runs in one worker thread (:class:`GuardedRoute`). A request waiting for a pooled
    connection waits in its worker thread; that cannot deadlock, because a request holding a
    connection is already running in its own thread and needs no other to finish.
    """
    allowed = PERMISSIONS[permission]

    async def dependency(request: Request) -> PendingAccess:
        pending = PendingAccess(request, allowed, permission, scope, check_credentials(state(request), request))
        request.state.portal_pending_access = pending  # for the 422 handler (problems.install)
        return pending

    dependency.__name__ = f"guard_{permission.replace('.', '_')}"
    dependency.permission = permission  # type: ignore[attr-defined]  # read by the authorisation matrix test
    dependency.scope = scope  # type: ignore[attr-defined]
    return dependency


def _guarded_parameters(endpoint: Callable[..., Any]) -> list[str]:
    """Names of ``endpoint``'s parameters whose default is a guard dependency."""
    return [name for name, p in inspect.signature(endpoint).parameters.items()
            if hasattr(getattr(p.default, "dependency", None), "permission")]


def in_one_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` (a sync function taking an :class:`Access`) as FastAPI will call it, in a worker
    thread: open the access, run the endpoint, finish (commit, or roll back on any exception)."""
    names = _guarded_parameters(endpoint)
    if not names:
        return endpoint
    if inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__name__}: guarded endpoints are sync functions (they run in a worker thread)")
    (name,) = names

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        pending: PendingAccess = kwargs[name]
        kwargs[name] = pending.open()
        try:
            result = endpoint(*args, **kwargs)
        except BaseException:
            pending.finish(False)
            raise
        pending.finish(True)
        return result

    return run


class GuardedRoute(APIRoute):
    """The route class of every portal router: guarded endpoints run in one worker thread."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, in_one_thread(endpoint), **kwargs)
