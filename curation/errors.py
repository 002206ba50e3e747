"""Two kinds of failure: a row that cannot be used (becomes a reject) and an input that cannot be read."""

from __future__ import annotations


class RowError(Exception):
    """One native row cannot become a pair; it is recorded as a reject with this reason and detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.reason, self.detail))  # rows travel to worker processes


class InputError(Exception):
    """A whole input (file, folder, Hub id, option) cannot be used; the message names it."""
