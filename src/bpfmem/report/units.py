"""Byte and rate formatting shared by every report."""

from __future__ import annotations

MIB = 1 << 20
KIB = 1 << 10


def fmt_bytes(n: float | int | None) -> str:
    """Human bytes: B below 1 KiB, KiB below 1 MiB, else MiB."""
    if n is None:
        return "-"
    a = abs(n)
    if a < KIB:
        return f"{n:.0f} B"
    if a < MIB:
        return f"{n / KIB:.1f} KiB"
    return f"{n / MIB:.2f} MiB"



def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 CPU``, ``2 CPUs``, ``1,000 schedules``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
