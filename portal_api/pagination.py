"""Cursor pagination: an opaque token holding the last item's sort key.

Keyset paging (``WHERE key > last ORDER BY key LIMIT n``) stays fast and stable while rows are
added, unlike offsets; the token is base64url JSON so clients treat it as opaque.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

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
