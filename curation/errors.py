"""Kinds of failure: a row that cannot be used (becomes a reject), an input that cannot be read, and a cluster that
lost a task."""

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


class HubUnreadable(InputError):
    """A Hub dataset id that cannot be opened (offline, no such dataset, no access): a recipe's `owner/name` path
    may be a local path mistyped."""


class ClusterError(Exception):
    """A Ray cluster could not run a task: its worker died more often than retried, its node was lost, it ran out
    of memory. The message names the task and Ray's reason."""
