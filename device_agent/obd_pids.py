"""Mode 01 PIDs the agent reads, declared once, with their decoders; kept apart from transport.

Each catalog signal with a PID maps to a :class:`PidSpec`: the PID byte, how many data bytes the ECU
answers with, and a decoder from those bytes to the catalog's unit. Decoders come from python-obd's
command table where it has one (so the formulas are the well-tested SAE J1979 ones); the odometer
(PID A6, model year 2019+) has no python-obd command and is declared here.

Responses are parsed from raw data bytes, which lets the agent ask for several PIDs in one request
(``01 0C 0D 05``: the ECU answers ``41 0C a b 0D c 05 d``) instead of paying the adapter's round trip
for each one: that round trip, not the CAN bus, is what limits an ELM327 to 5-20 requests/s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import obd
from obd.protocols.protocol import Message

from vinsight.contract.signals import OBD_SIGNALS, Signal

MAX_PIDS_PER_REQUEST = 6  # SAE J1979 allows up to six PIDs in one mode 01 request on CAN
SINGLE_FRAME_DATA_BYTES = 7  # a CAN single frame carries 7 bytes: 0x41 + (pid + data)...


@dataclass(frozen=True, slots=True)
class PidSpec:
    signal: Signal
    pid: int
    data_bytes: int
    decode: Callable[[bytes], float | None]


def _python_obd_decoder(command: obd.OBDCommand) -> Callable[[bytes], float | None]:
    def decode(data: bytes) -> float | None:
        message = Message([])
        message.data = bytearray([0x41, command.pid]) + bytearray(data)
        value = command.decode([message])
        if value is None:
            return None
        magnitude = getattr(value, "magnitude", value)
        try:
            return float(magnitude)
        except (TypeError, ValueError):
            return None

    return decode


def _odometer(data: bytes) -> float | None:
    # PID A6: 4 bytes, 0.1 km per bit (SAE J1979-DA)
    if len(data) != 4:
        return None
    return int.from_bytes(data, "big") / 10.0


def _build() -> dict[str, PidSpec]:
    specs: dict[str, PidSpec] = {}
    for sig in OBD_SIGNALS:
        pid = int(sig.pid, 16)
        if sig.obd_command is not None:
            command = obd.commands[sig.obd_command]
            specs[sig.name] = PidSpec(sig, pid, command.bytes - 2, _python_obd_decoder(command))
        elif sig.name == "odometer":
            specs[sig.name] = PidSpec(sig, pid, 4, _odometer)
    return specs


PIDS: dict[str, PidSpec] = _build()
BY_PID: dict[int, PidSpec] = {s.pid: s for s in PIDS.values()}


def request_bytes(specs: list[PidSpec]) -> bytes:
    """The ELM327 command for one mode 01 request of several PIDs, e.g. b'010C0D05'."""
    return b"01" + "".join(f"{s.pid:02X}" for s in specs).encode()


def response_bytes(specs: list[PidSpec]) -> int:
    """Data bytes the ECU answers with (including the 0x41 service byte)."""
    return 1 + sum(1 + s.data_bytes for s in specs)


def pack_requests(specs: list[PidSpec], multi_pid: bool, single_frame: bool = True) -> list[list[PidSpec]]:
    """Group PIDs into requests. With ``single_frame`` every answer fits one CAN frame, which avoids
    ISO-TP flow control and the adapter's per-frame cost; otherwise up to six PIDs share a request."""
    if not multi_pid:
        return [[s] for s in specs]
    groups: list[list[PidSpec]] = []
    # first-fit decreasing keeps the number of requests low
    for spec in sorted(specs, key=lambda s: -s.data_bytes):
        for group in groups:
            if len(group) < MAX_PIDS_PER_REQUEST and (
                not single_frame or response_bytes([*group, spec]) <= SINGLE_FRAME_DATA_BYTES
            ):
                group.append(spec)
                break
        else:
            groups.append([spec])
    return groups


def parse_response(data: bytes, expected: list[PidSpec]) -> dict[str, float]:
    """Decode ``41 pid data pid data ...``; PIDs the ECU left out are simply absent.

    Raises ValueError when the bytes do not parse (unknown PID, wrong length), so the caller can fall
    back to single requests for an ECU with a quirky multi-PID answer.
    """
    if not data or data[0] != 0x41:
        raise ValueError(f"not a mode 01 answer: {bytes(data[:4]).hex()}")
    wanted = {s.pid: s for s in expected}
    values: dict[str, float] = {}
    i = 1
    while i < len(data):
        pid = data[i]
        spec = wanted.get(pid)
        if spec is None and pid == 0x41 and 0x41 not in wanted:
            i += 1  # some ECUs repeat the service byte before each PID's answer
            continue
        if spec is None:
            if all(b == 0 for b in data[i:]):
                break  # ISO-TP padding
            raise ValueError(f"unexpected PID {pid:02X} in the answer")
        chunk = bytes(data[i + 1 : i + 1 + spec.data_bytes])
        if len(chunk) != spec.data_bytes:
            raise ValueError(f"PID {pid:02X} answer is {len(chunk)} bytes, expected {spec.data_bytes}")
        value = spec.decode(chunk)
        if value is not None:
            values[spec.signal.name] = value
        i += 1 + spec.data_bytes
    return values


def supported_from_bitmaps(bitmaps: dict[int, bytes]) -> set[int]:
    """PIDs marked supported by the answers to 0100, 0120, 0140 ... (base PID -> 4 bitmap bytes)."""
    supported: set[int] = set()
    for base, bits in bitmaps.items():
        for byte_index, byte in enumerate(bits[:4]):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    supported.add(base + byte_index * 8 + bit + 1)
    return supported
