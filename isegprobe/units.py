"""Sizes as people read them, for messages and summaries."""

from __future__ import annotations


def human_bytes(count: int) -> str:
    """`count` bytes in B, KiB, MiB or GiB, whichever reads shortest."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    raise AssertionError("unreachable")


def counted(count: int, noun: str) -> str:
    """`1 step`, `2 steps`: a count with its noun (one that takes an s in the plural)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
