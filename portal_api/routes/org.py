"""Organisation administration: staff users and API keys (admins only)."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Path, Response

from ..access import Access, GuardedRoute
from ..models import ApiKey, ApiKeyIn, User, UserIn
from ..problems import Problem, responses
from ..security import api_key_hash, hash_password, new_api_key
from .common import allow

router = APIRouter(prefix="/v1/org", tags=["organisation"], route_class=GuardedRoute)
ERR = responses(400, 401, 403, 409, 422, 429)


def _check_role(access: Access, role: str) -> None:
    allowed = {"dealer": {"admin", "analyst", "service_advisor", "sales"},
               "insurer": {"admin", "analyst", "underwriter"}}[str(access.caller.audience)]
    if role not in allowed:
        raise Problem(422, "role-not-in-organisation", f"'{role}' is not a role of a {access.caller.audience}; "
                      f"use one of {', '.join(sorted(allowed))}.")


@router.get("/users", response_model=list[User], operation_id="org_users", responses=ERR)
def org_users(access: Access = allow("org.admin")) -> list[dict[str, Any]]:
    return access.conn.execute("SELECT user_id, email, role, display_name, active FROM portal_users WHERE org_id = %s"
                               " ORDER BY user_id", (access.caller.org_id,)).fetchall()


@router.post("/users", response_model=User, status_code=201, operation_id="org_create_user", responses=ERR)
def org_create_user(body: UserIn, access: Access = allow("org.admin")) -> dict[str, Any]:
    _check_role(access, body.role)
    try:
        with access.conn.transaction():
            return access.conn.execute(
                "INSERT INTO portal_users (email, password_hash, org_id, role, display_name) VALUES (%s, %s, %s, %s,"
                " %s) RETURNING user_id, email, role, display_name, active",
                (body.email, hash_password(body.password), access.caller.org_id, body.role, body.display_name)
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise Problem(409, "email-taken", "A user with this e-mail exists.") from exc


@router.delete("/users/{user_id}", status_code=204, operation_id="org_deactivate_user", responses=ERR)
def org_deactivate_user(user_id: int = Path(ge=1, le=2**62), access: Access = allow("org.admin")) -> Response:
    if user_id == access.caller.id and access.caller.kind == "user":
        raise Problem(409, "cannot-deactivate-self", "Ask another admin to deactivate your account.")
    cur = access.conn.execute("UPDATE portal_users SET active = false WHERE user_id = %s AND org_id = %s",
                              (user_id, access.caller.org_id))
    if cur.rowcount == 0:
        raise Problem(404, "user-not-found", f"No user {user_id} in your organisation.")
    return Response(status_code=204)


def _key(r: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    return {"key_id": r["key_id"], "name": r["name"], "prefix": r["prefix"], "role": r["role"],
            "created_at": r["created_at"].isoformat(),
            "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None, "key": token}


@router.get("/api-keys", response_model=list[ApiKey], operation_id="org_api_keys", responses=ERR)
def org_api_keys(access: Access = allow("org.admin")) -> list[dict[str, Any]]:
    rows = access.conn.execute("SELECT * FROM api_keys WHERE org_id = %s ORDER BY key_id",
                               (access.caller.org_id,)).fetchall()
    return [_key(r) for r in rows]


@router.post("/api-keys", response_model=ApiKey, status_code=201, operation_id="org_create_api_key", responses=ERR,
             summary="Create a server-to-server key; the full key is in this response only")
def org_create_api_key(body: ApiKeyIn, access: Access = allow("org.admin")) -> dict[str, Any]:
    _check_role(access, body.role)
    k = new_api_key()
    row = access.conn.execute("INSERT INTO api_keys (org_id, name, prefix, key_hash, role) VALUES (%s, %s, %s, %s, %s)"
                              " RETURNING *", (access.caller.org_id, body.name, k.prefix, api_key_hash(k.secret),
                                               body.role)).fetchone()
    return _key(row, k.token)


@router.delete("/api-keys/{key_id}", status_code=204, operation_id="org_revoke_api_key", responses=ERR)
def org_revoke_api_key(key_id: int = Path(ge=1, le=2**62), access: Access = allow("org.admin")) -> Response:
    cur = access.conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s"
                              " AND org_id = %s", (key_id, access.caller.org_id))
    if cur.rowcount == 0:
        raise Problem(404, "api-key-not-found", f"No API key {key_id} in your organisation.")
    return Response(status_code=204)
