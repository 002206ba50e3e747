"""The source registry: every module in this package (except `base` and `common`) defines one adapter."""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from curation.errors import InputError
from curation.sources.base import Adapter

_SKIP = {"base", "common"}


def _discover() -> dict[str, type[Adapter]]:
    registry: dict[str, type[Adapter]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name in _SKIP or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        adapters = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Adapter) and obj.__module__ == module.__name__
        ]
        if len(adapters) != 1:
            raise RuntimeError(f"{module.__name__} must define exactly one Adapter, found {len(adapters)}")
        adapter = adapters[0]
        if adapter.info.key != module_info.name:
            raise RuntimeError(f"{module.__name__}: adapter key {adapter.info.key!r} must equal the module name")
        registry[adapter.info.key] = adapter
    return registry


REGISTRY: dict[str, type[Adapter]] = _discover()


def get_adapter(key: str) -> type[Adapter]:
    try:
        return REGISTRY[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InputError(
            f"unknown source {key!r}; {hint}`curate sources` lists them: {', '.join(sorted(REGISTRY))}"
        ) from None


def closest_adapter(fields: set[str], current: str) -> str | None:
    """The adapter of `current`'s kind (training set or benchmark) whose native fields (`mapped_fields`) are most
    like `fields` (a row's, one that `current` rejected for a missing field), by the share of the names in either
    that are in both; None unless that one alone is best, shares two names or more and more than half of those in
    either, while `current` shares half or less (a row of the right adapter with a field missing names none).
    Names alone: a hint for a row read with the wrong adapter, not a claim that the other one converts it."""

    def likeness(key: str) -> float:
        known = REGISTRY[key].mapped_fields
        return len(fields & known) / len(fields | known) if len(fields & known) >= 2 else 0.0

    if current not in REGISTRY or likeness(current) > 0.5:
        return None
    kind = REGISTRY[current].info.kind
    ranked = sorted(((likeness(key), key) for key, a in REGISTRY.items() if key != current and a.info.kind == kind),
                    reverse=True)  # fmt: skip
    if not ranked or ranked[0][0] <= 0.5 or (len(ranked) > 1 and ranked[1][0] == ranked[0][0]):
        return None
    return ranked[0][1]
