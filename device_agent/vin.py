"""The VIN, decoded from the raw mode 09 PID 02 answer.

python-obd 0.7.3 decodes the VIN and then strips the characters '0', '1' and '2' from both ends
(it means to drop padding bytes but strips characters), so ``WP0ZZZ99ZTS390000`` comes back as
``WP0ZZZ99ZTS39``. A VIN is the key the agent caches supported PIDs under and the cloud ties a car
to its owner with, so the agent decodes the frames itself.

Answers come in two shapes: CAN (ISO 15765-4), where the adapter assembles one message
``49 02 01`` + 17 ASCII bytes (some ECUs omit the ``01`` item count), and the legacy protocols
(ISO 9141-2, KWP2000, J1850), where five messages each carry ``49 02 <n>`` + 4 bytes and the first
is padded with zeros. Both are handled by keeping only the VIN alphabet after each header.
"""

from __future__ import annotations

from collections.abc import Iterable

VIN_LENGTH = 17
VIN_ALPHABET = frozenset("ABCDEFGHJKLMNPRSTUVWXYZ0123456789")  # ISO 3779: no I, O or Q

_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


class VinError(ValueError):
    """The answer holds no valid 17-character VIN."""


def decode_vin(messages: Iterable[bytes]) -> str:
    """Decode the data bytes of the mode 09 PID 02 answer (one bytes object per message)."""
    chars: list[str] = []
    for data in messages:
        data = bytes(data)
        if len(data) >= 2 and data[0] == 0x49 and data[1] == 0x02:
            data = data[2:]
        for b in data:
            c = chr(b)
            if c in VIN_ALPHABET:
                chars.append(c)
    if len(chars) < VIN_LENGTH:
        raise VinError(f"answer holds {len(chars)} VIN characters, not {VIN_LENGTH}")
    vin = "".join(chars[-VIN_LENGTH:])
    return vin


def check_digit_ok(vin: str) -> bool:
    """ISO 3779 / 49 CFR 565 check digit (position 9). Mandatory in North America only, so a failed
    check is reported, never used to reject a VIN."""
    if len(vin) != VIN_LENGTH or any(c not in VIN_ALPHABET for c in vin):
        return False
    total = sum(_TRANSLITERATION[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    expected = total % 11
    return vin[8] == ("X" if expected == 10 else str(expected))


def frame_can(vin: str, with_count: bool = True) -> bytes:
    """The assembled CAN answer for ``vin`` (used by tests and the emulator fixture)."""
    return bytes([0x49, 0x02] + ([0x01] if with_count else [])) + vin.encode("ascii")


def frame_legacy(vin: str) -> list[bytes]:
    """The five legacy-protocol messages for ``vin``: 3 zero pad bytes, then 4 characters each."""
    padded = b"\x00\x00\x00" + vin.encode("ascii")
    return [bytes([0x49, 0x02, n + 1]) + padded[4 * n : 4 * n + 4] for n in range(5)]
