"""Signed webhooks to a dealer's CRM: an outbox in the database, delivered with retries.

A lead change enqueues one delivery per subscribed webhook in the same transaction as the change
(so a change never happens without its notification, and a rolled-back change sends nothing).
:func:`deliver_due` posts due deliveries with the body signed by HMAC-SHA256 of
``"<timestamp>.<body>"`` under the webhook's secret (header ``X-VINsight-Signature:
t=<timestamp>,v1=<hex>``; the timestamp lets receivers refuse replays), retries with exponential
backoff, and logs every attempt's status on the delivery row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import httpx
import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-VINsight-Signature"
EVENT_HEADER = "X-VINsight-Event"
DELIVERY_HEADER = "X-VINsight-Delivery"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = 300, now: int | None = None) -> bool:
    """What a receiver does (and what the tests do): check the MAC and the timestamp's freshness."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else int(time.time())) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body).split("v1=", 1)[1], parts.get("v1", ""))


def enqueue(conn: psycopg.Connection, org_id: int, event: str, payload: dict[str, Any]) -> int:
    """Queue ``event`` for every active webhook of ``org_id`` subscribed to it; returns how many."""
    cur = conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event, payload)"
        " SELECT webhook_id, %s, %s FROM webhooks WHERE org_id = %s AND active AND %s = ANY (events)",
        (event, Jsonb(payload), org_id, event))
    return cur.rowcount


def deliver_due(conn: psycopg.Connection, *, timeout_s: float = 5.0, max_attempts: int = 8,
                backoff_s: float = 2.0, limit: int = 100, client: httpx.Client | None = None) -> dict[str, int]:
    """Attempt every due delivery once (rows locked SKIP LOCKED, so several portals can share the job)."""
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    own = client is None
    http = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
    try:
        with conn.transaction():
            rows = conn.cursor(row_factory=tuple_row).execute(
                "SELECT d.delivery_id, d.event, d.payload, d.attempts, w.url, w.secret FROM webhook_deliveries d"
                " JOIN webhooks w ON w.webhook_id = d.webhook_id"
                " WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND w.active"
                " ORDER BY d.next_attempt_at LIMIT %s FOR UPDATE OF d SKIP LOCKED", (limit,)).fetchall()
            for delivery_id, event, payload, attempts, url, secret in rows:
                body = json.dumps({"event": event, "delivery_id": delivery_id, "data": payload},
                                  separators=(",", ":"), default=str).encode()
                ts = int(time.time())
                status: int | None = None
                error: str | None = None
                try:
                    resp = http.post(url, content=body, headers={
                        "Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, ts, body),
                        EVENT_HEADER: event, DELIVERY_HEADER: str(delivery_id)})
                    status = resp.status_code
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                attempts += 1
                if error is None:
                    conn.execute("UPDATE webhook_deliveries SET state = 'delivered', attempts = %s, last_status = %s,"
                                 " last_error = NULL, delivered_at = now() WHERE delivery_id = %s",
                                 (attempts, status, delivery_id))
                    counts["delivered"] += 1
                    continue
                final = attempts >= max_attempts
                delay = min(3600.0, backoff_s * 2 ** (attempts - 1))
                conn.execute(
                    "UPDATE webhook_deliveries SET state = %s, attempts = %s, last_status = %s, last_error = %s,"
                    " next_attempt_at = %s WHERE delivery_id = %s",
                    ("failed" if final else "pending", attempts, status, error,
                     dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay), delivery_id))
                counts["failed" if final else "retrying"] += 1
                log.warning("webhook delivery %s to %s failed (%s), attempt %s%s", delivery_id, url, error, attempts,
                            "; giving up" if final else "")
    finally:
        if own:
            http.close()
    return counts
