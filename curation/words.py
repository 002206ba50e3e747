"""Counts in words, and text as it may be shown, as the commands and the workbench print them."""

from __future__ import annotations

import re

# Control characters other than newline and tab would drive the terminal (colours, cursor moves) or hide in a page
# (NUL), and the bidirectional overrides, isolates and marks (U+202A-202E, U+2066-2069, U+200E-200F, U+061C) would
# reorder what is shown around them, as would line and paragraph separators break it: spelled out.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """Text from a dataset or a user as it may be printed or shown: control and bidirectional formatting characters
    spelled as escapes (`\\x1b`, `\\u202e`)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def quantity(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 review`, `2 reviews` (`nouns`: the plural where it is not `noun` + s)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"
