"""Remote configuration: validate, apply, persist, acknowledge.

The cloud sends an :class:`AgentConfig` retained on ``cmd/<device>/config``. Versions only move
forward: a command whose version is not newer than the applied one is acknowledged again (so the
cloud sees the device's state) but not re-applied. The applied configuration is persisted beside
the outbox, so a restarted agent comes back with it before the broker redelivers the retained
command.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vinsight.contract import AgentConfig, ConfigAck, codec

from .outbox import Outbox

log = logging.getLogger(__name__)


class RemoteConfig:
    def __init__(self, outbox: Outbox, apply: Callable[[AgentConfig], None], clock_ms: Callable[[], int]) -> None:
        self.outbox = outbox
        self.apply = apply
        self.clock_ms = clock_ms
        self._lock = threading.Lock()
        self.applied: AgentConfig | None = None
        stored = outbox.get_meta("config")
        if stored:
            config, errors = codec.decode_config(stored.encode())
            if config is not None:
                self.applied = config
            else:  # pragma: no cover - only our own encoder writes it
                log.error("stored configuration is invalid (%s); ignoring it", errors)

    @property
    def version(self) -> int:
        return self.applied.version if self.applied else 0

    def restore(self) -> None:
        """Apply the persisted configuration at start-up."""
        if self.applied is not None:
            self.apply(self.applied)

    def handle(self, payload: bytes) -> ConfigAck:
        config, errors = codec.decode_config(payload)
        with self._lock:
            if config is None:
                log.warning("configuration rejected: %s", "; ".join(errors))
                return ConfigAck(self._version_of(payload), "rejected", errors, self.clock_ms())
            if self.applied is not None and config.version <= self.applied.version:
                return ConfigAck(self.applied.version, "applied", [], self.clock_ms())
            try:
                self.apply(config)
            except ValueError as exc:
                return ConfigAck(config.version, "rejected", [str(exc)], self.clock_ms())
            self.applied = config
            self.outbox.set_meta("config", codec.encode_config(config).decode())
        log.info("configuration version %d applied", config.version)
        return ConfigAck(config.version, "applied", [], self.clock_ms())

    @staticmethod
    def _version_of(payload: bytes) -> int:
        import json

        try:
            v = json.loads(payload).get("version", -1)
            return v if isinstance(v, int) and not isinstance(v, bool) else -1
        except (ValueError, AttributeError):
            return -1
