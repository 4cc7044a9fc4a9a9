"""Authentication and what every signed-in caller may read about themselves and the directory."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from psycopg.rows import dict_row

from ..access import Access, GuardedRoute, guard, state
from ..models import Me, Organisation, Token
from ..problems import Problem, responses
from ..security import issue_token, verify_password

router = APIRouter(prefix="/v1", tags=["auth"], route_class=GuardedRoute)


def allow(permission: str, scope: Any = None) -> Any:
    """The guard as a dependency (the endpoint's thread commits the audit rows before it returns)."""
    return Depends(guard(permission, scope))


@router.post("/auth/token", response_model=Token, operation_id="login",
             responses=responses(400, 401, 422, 429),
             summary="Exchange e-mail and password for a bearer access token (OAuth2 password flow)")
def login(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    st = state(request)
    client_ip = request.client.host if request.client else "unknown"
    for key in (f"login-email:{form.username.lower()}", f"login-ip:{client_ip}"):
        wait = st.login_limiter.take(key)
        if wait > 0:
            raise Problem(429, "rate-limited", f"Too many login attempts; retry in {wait:.0f} s.",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    with st.pool.connection() as conn:
        conn.row_factory = dict_row
        row = conn.execute("SELECT user_id, password_hash FROM portal_users WHERE lower(email) = lower(%s)"
                           " AND active", (form.username,)).fetchone()
    if not verify_password(row["password_hash"] if row else None, form.password) or row is None:
        raise Problem(401, "bad-credentials", "Unknown e-mail or wrong password.",
                      headers={"WWW-Authenticate": 'Bearer realm="vinsight"'})
    token, ttl = issue_token(st.settings.jwt_secret, row["user_id"], st.settings.token_ttl_s)
    return Token(access_token=token, expires_in=ttl)


@router.get("/whoami", response_model=Me, operation_id="whoami", responses=responses(401, 429),
            summary="Who the credentials belong to: role, audience, organisation (every audience)")
def whoami(access: Access = allow("any")) -> Me:
    c = access.caller
    org = None
    if c.org_id is not None:
        r = access.conn.execute("SELECT name FROM organisations WHERE org_id = %s", (c.org_id,)).fetchone()
        org = r["name"] if r else None
    return Me(kind=c.kind, id=c.id, label=c.label, role=c.role, audience=str(c.audience), org_id=c.org_id,
              organisation=org, owner_id=c.owner_id)  # type: ignore[arg-type]


@router.get("/me/whoami", response_model=Me, operation_id="whoami_driver", responses=responses(401, 403, 429),
            summary="Who the driver's credentials belong to")
def whoami_driver(access: Access = allow("me")) -> Me:
    c = access.caller
    return Me(kind=c.kind, id=c.id, label=c.label, role=c.role, audience="driver", owner_id=c.owner_id)


def _directory(access: Access) -> list[Organisation]:
    rows = access.conn.execute("SELECT org_id, kind, name FROM organisations ORDER BY name").fetchall()
    return [Organisation(**r) for r in rows]


@router.get("/organisations", response_model=list[Organisation], operation_id="organisations",
            responses=responses(401, 403, 429), summary="Dealers and insurers a driver can grant consent to")
def organisations(access: Access = allow("me")) -> list[Organisation]:
    return _directory(access)
