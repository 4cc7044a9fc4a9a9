"""Trouble codes as changes, not as a list repeated every poll.

The agent reads stored (mode 03), pending (mode 07) and permanent (mode 0A) codes plus the MIL and
code count (mode 01 PID 01). :class:`DtcTracker` compares each reading with the last one and emits
``dtc_new`` / ``dtc_cleared`` per code and type, and ``mil_on`` / ``mil_off``. The last known state is
persisted, so a restart of the agent does not announce every standing code again.

Decoding of the code bytes is here too, from raw frames: python-obd's DTC decoder expects the
ISO 15765-4 count byte after the service byte on CAN and silently shifts every code when an ECU (or
an emulator) leaves it out, so both layouts are recognised by their length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vinsight.contract import DtcType, EventKind

_LETTERS = "PCBU"


def code_from_bytes(a: int, b: int) -> str:
    """SAE J2012: two bytes -> e.g. 'P0301'."""
    return f"{_LETTERS[a >> 6]}{(a >> 4) & 0x3}{a & 0xF:X}{b >> 4:X}{b & 0xF:X}"


def decode_dtc_answer(messages: list[bytes], service: int) -> list[str]:
    """Codes from the data of a mode 03/07/0A answer (one bytes object per ECU message).

    CAN answers are ``<service+0x40> <count> <2 bytes per code>``; legacy ones have no count byte.
    When the length says a count byte is present (odd payload after the service byte) it is used.
    """
    codes: list[str] = []
    for data in messages:
        data = bytes(data)
        if not data or data[0] != service + 0x40:
            continue
        body = data[1:]
        if len(body) % 2 == 1:  # count byte present
            count, body = body[0], body[1:]
            body = body[: 2 * count] if count * 2 <= len(body) else body
        for i in range(0, len(body) - 1, 2):
            a, b = body[i], body[i + 1]
            if a == 0 and b == 0:
                continue  # padding
            code = code_from_bytes(a, b)
            if code not in codes:
                codes.append(code)
    return codes


def mil_from_status(data: bytes) -> tuple[bool, int] | None:
    """MIL and stored-code count from the mode 01 PID 01 answer ``41 01 A B C D``."""
    if len(data) < 3 or data[0] != 0x41 or data[1] != 0x01:
        return None
    return bool(data[2] & 0x80), data[2] & 0x7F


@dataclass
class DtcTracker:
    state_file: Path | None = None
    codes: dict[str, set[str]] = field(default_factory=dict)  # dtc_type -> codes
    mil: bool | None = None

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            try:
                doc = json.loads(self.state_file.read_text())
                self.codes = {k: set(v) for k, v in doc.get("codes", {}).items()}
                self.mil = doc.get("mil")
            except (ValueError, OSError):
                self.codes, self.mil = {}, None

    def update(self, readings: dict[DtcType, list[str]], mil: tuple[bool, int] | None,
               describe: Any = None) -> list[tuple[EventKind, dict[str, Any]]]:
        """Compare with the last reading; ``readings`` holds only the types that were read now."""
        events: list[tuple[EventKind, dict[str, Any]]] = []
        for dtc_type, codes in readings.items():
            before = self.codes.get(dtc_type.value, set())
            now = set(codes)
            for code in sorted(now - before):
                data: dict[str, Any] = {"code": code, "dtc_type": dtc_type.value}
                if describe is not None and (text := describe(code)):
                    data["description"] = text
                events.append((EventKind.DTC_NEW, data))
            for code in sorted(before - now):
                events.append((EventKind.DTC_CLEARED, {"code": code, "dtc_type": dtc_type.value}))
            self.codes[dtc_type.value] = now
        if mil is not None:
            on, count = mil
            if (self.mil is None or on != self.mil) and (on or self.mil is not None):
                events.append((EventKind.MIL_ON if on else EventKind.MIL_OFF, {"dtc_count": count}))
            self.mil = on
        if events:
            self._save()
        return events

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"codes": {k: sorted(v) for k, v in self.codes.items()}, "mil": self.mil}))
        tmp.replace(self.state_file)
