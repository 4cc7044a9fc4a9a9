"""ELM327-emulator fixtures: a real emulated adapter, driven through python-obd over TCP or a pty.

``emulator`` starts a fresh ELM327-emulator 4.x per test in this process (scenario ``car``, answer
delay 0.05 s like a real adapter) with a VIN that starts and ends in characters python-obd would strip,
a controllable battery voltage (ATRV) and injectable trouble codes. Two fixes to the stock emulator
are applied for the duration of the test: mode 03/07/0A answers carry the ISO 15765-4 DTC count byte
(stock 4.0.0 omits it, which makes python-obd misdecode codes), and the VIN answer is framed as a real
CAN ECU frames it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from vinsight.emulated_car import DEFAULT_VIN, Emulator

__all__ = ["TEST_VIN", "CollectingSink", "Emulator"]

TEST_VIN = DEFAULT_VIN


class CollectingSink:
    """A ReadingSink that keeps everything, for assertions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readings: list[tuple[str, float, int]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def reading(self, name: str, value: float, ts_ms: int) -> None:
        with self.lock:
            self.readings.append((name, value, ts_ms))

    def extra(self, name: str, value: float, ts_ms: int) -> None:
        self.reading(name, value, ts_ms)

    def event(self, kind, data, ts_ms=None) -> None:
        with self.lock:
            self.events.append((str(kind.value if hasattr(kind, "value") else kind), dict(data)))

    def names(self) -> set[str]:
        with self.lock:
            return {n for n, _v, _t in self.readings}

    def kinds(self) -> list[str]:
        with self.lock:
            return [k for k, _d in self.events]

    def wait(self, predicate, timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return False


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def sink() -> CollectingSink:
    return CollectingSink()
