"""Damaging an artifact's files on purpose, for the tests that check the runtime refuses them."""

from __future__ import annotations

from pathlib import Path


def flip_middle_byte(path: Path) -> None:
    """Invert one byte in the middle of PATH: same size, different sha256."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
