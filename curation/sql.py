"""Values spliced into SQL text (paths, names): always as properly quoted string literals."""

from __future__ import annotations

from pathlib import Path


def sql_literal(value: str | Path | int | float) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
