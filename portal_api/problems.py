"""Errors as RFC 9457 problem details (``application/problem+json``), for every failure path.

One exception type (:class:`Problem`) for the app's own refusals, and handlers that turn
FastAPI's validation errors and Starlette's HTTP errors into the same shape, so a client parses
one format whatever went wrong.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://vinsight.dev/problems/"
MEDIA_TYPE = "application/problem+json"

_TITLES = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 413: "Payload too large", 415: "Unsupported media type",
           422: "Invalid request", 429: "Too many requests", 500: "Internal error", 503: "Unavailable"}


class Problem(Exception):
    """A refusal with a stable ``code`` (the last segment of the problem type URI)."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_body(status: int, code: str, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    return {"type": PROBLEM_TYPE_BASE + code, "title": _TITLES.get(status, "Error"), "status": status,
            "detail": detail, "instance": instance, **extra}


def _response(request: Request, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
              **extra: Any) -> JSONResponse:
    return JSONResponse(problem_body(status, code, detail, request.url.path, **extra), status_code=status,
                        media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return _response(request, exc.status, exc.code, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Who asks comes before what they sent: on a guarded endpoint, a caller whose key is revoked,
        # whose account is deactivated or whose role lacks the permission gets 401/403, not a
        # description of the request's shape. (Token signatures and expiry were checked already;
        # these checks read the database, which the guard leaves to the endpoint's thread.)
        pending = getattr(request.state, "portal_pending_access", None)
        if pending is not None:
            try:
                await run_in_threadpool(pending.authorise)
            except Problem as p:
                return _response(request, p.status, p.code, p.detail, p.headers, **p.extra)
        errors = [{"location": [str(p) for p in e.get("loc", ())], "message": e.get("msg", ""), "type": e.get("type")}
                  for e in exc.errors()]
        where = "; ".join(f"{'.'.join(e['location'])}: {e['message']}" for e in errors[:5])
        return _response(request, 422, "invalid-request", f"The request does not match the API: {where}",
                         errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not-found", 405: "method-not-allowed", 401: "not-authenticated"}
        code = codes.get(exc.status_code, "http-error")
        return _response(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(psycopg.DataError)
    async def _data(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input PostgreSQL cannot store (a NUL character in text, a date out of its range): the
        # request's fault, whichever field it was in.
        return _response(request, 422, "unstorable-value", "A value in the request cannot be stored (for "
                         f"example a NUL character in text): {str(exc).splitlines()[0][:200]}")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _response(request, 500, "internal-error", "The server failed on this request; it has been logged.")


# OpenAPI: the problem shape, declared once and referenced from every operation's error responses.
PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "instance": {"type": "string"},
                   "errors": {"type": "array", "items": {"type": "object"}}},
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": _TITLES.get(s, "Error"),
                "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}} for s in statuses}
