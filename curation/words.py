"""Counts in words, as the commands and the workbench print them."""

from __future__ import annotations


def quantity(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 review`, `2 reviews` (`nouns`: the plural where it is not `noun` + s)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"
