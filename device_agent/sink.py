"""Where the agent's sources deliver what they read.

Sources (the OBD poller, the GPS reader, the replay of a recorded drive) know nothing about
batching, disks or MQTT: they call a :class:`ReadingSink`. The agent's recorder implements it,
assembling readings into one :class:`vinsight.contract.Sample` per sample interval and giving every
sample and event its per-boot sequence number before it reaches the outbox.
"""

from __future__ import annotations

from typing import Any, Protocol

from vinsight.contract import EventKind


class ReadingSink(Protocol):
    def reading(self, name: str, value: float, ts_ms: int) -> None:
        """A catalog signal's value (``name`` is in ``vinsight.contract.signals.BY_NAME``)."""

    def extra(self, name: str, value: float, ts_ms: int) -> None:
        """A value outside the catalog (e.g. a manufacturer PID); stored server-side as jsonb."""

    def event(self, kind: EventKind, data: dict[str, Any], ts_ms: int | None = None) -> None:
        """A discrete event (DTC change, engine on/off, ...); ``ts_ms=None`` means now."""
