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
