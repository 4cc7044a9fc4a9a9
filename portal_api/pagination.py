"""Cursor pagination: an opaque token holding the last item's sort key.

Keyset paging (``WHERE key > last ORDER BY key LIMIT n``) stays fast and stable while rows are
added, unlike offsets; the token is base64url JSON so clients treat it as opaque.
"""

from __future__ import annotations

import base64
import decimal
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import orjson
from fastapi import Response
from pydantic import BaseModel, Field, TypeAdapter

from .problems import Problem

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page; null on the last page")


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(token: str | None, arity: int) -> list[Any] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "bad-cursor", "The cursor is not one this API issued; start without it.") from exc
    if not isinstance(key, list) or len(key) != arity or not all(isinstance(k, int | float | str) for k in key):
        raise Problem(400, "bad-cursor", "The cursor is not one this API issued; start without it.")
    return key


def page_of(rows: list[dict[str, Any]], limit: int, key: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Rows were fetched with ``LIMIT limit + 1``: trim and make the next cursor."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(key(rows[-1]))
    return rows, None


# Tests set this: every page is then also validated against its response model, and its JSON must
# equal what FastAPI's validation would have produced, field for field (see page_response).
CHECK_PAGES = os.environ.get("VINSIGHT_PORTAL_CHECK_PAGES", "") == "1"


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def page_response(items: list[dict[str, Any]], next_cursor: str | None, model: type[BaseModel]) -> Response:
    """A page of ``model`` items as JSON bytes, ready to send.

    List endpoints build their items as plain JSON-typed dicts already, in the shape of ``model``
    (which the route's ``response_model`` documents). Returning the bytes skips FastAPI's
    re-validation of every item into pydantic models and back, which on the busiest pages cost
    more CPU than the database query behind them. With ``VINSIGHT_PORTAL_CHECK_PAGES=1`` (the test
    suite) each page is validated anyway and must serialise exactly as the validated model would:
    every field present, nothing extra, no value coerced."""
    payload = {"items": items, "next_cursor": next_cursor}
    body = orjson.dumps(payload, default=_json_default)
    if CHECK_PAGES:
        _check(orjson.loads(body), model)
    return Response(body, media_type="application/json")


def json_page_response(items: Sequence[str | bytes], next_cursor: str | None, model: type[BaseModel]) -> Response:
    """:func:`page_response` for items that are JSON text already (built by PostgreSQL)."""
    parts = [i.encode() if isinstance(i, str) else i for i in items]
    body = b"".join((b'{"items":[', b",".join(parts), b'],"next_cursor":', orjson.dumps(next_cursor), b"}"))
    if CHECK_PAGES:
        _check(orjson.loads(body), model)
    return Response(body, media_type="application/json")


def keyset_page(items: list[T], limit: int, key: Callable[[T], list[Any]]) -> tuple[list[T], str | None]:
    """:func:`page_of` for any items: fetched with ``LIMIT limit + 1``, trimmed, and the next cursor."""
    if len(items) > limit:
        items = items[:limit]
        return items, encode_cursor(key(items[-1]))
    return items, None


def _check(sent: Any, model: type[BaseModel]) -> None:
    adapter = _adapters.get(model) or _adapters.setdefault(model, TypeAdapter(Page[model]))  # type: ignore[valid-type]
    expected = adapter.dump_python(adapter.validate_python(sent), mode="json")
    if sent != expected:
        raise AssertionError(f"page of {model.__name__} differs from its response model: "
                             f"sent {sent!r}, model gives {expected!r}")


_adapters: dict[type[BaseModel], TypeAdapter[Any]] = {}
