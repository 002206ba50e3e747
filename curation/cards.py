"""Data cards: one markdown file per source under `data_cards/`, with YAML front matter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CARDS_DIR = Path(__file__).resolve().parent.parent / "data_cards"
REQUIRED_KEYS = ("key", "name", "hub_id", "license", "modality", "kind", "size", "pairs", "pitfalls", "citation")


@dataclass(frozen=True)
class Card:
    path: Path
    front: dict[str, Any]
    body: str


def read_card(path: Path) -> Card:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: a data card starts with YAML front matter between '---' lines")
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        raise ValueError(f"{path}: the front matter is not closed by a '---' line")
    front = yaml.safe_load(head) or {}
    missing = [k for k in REQUIRED_KEYS if k not in front]
    if missing:
        raise ValueError(f"{path}: front matter lacks {', '.join(missing)}")
    return Card(path, front, body.strip())


def declared_features(card: Card, config: str | None = None) -> Any:
    """The `datasets.Features` a card declares for `config` (its only config when None): `features.configs`
    holds each config's `dataset_info.features` as dataset cards spell them in YAML (`dtype`, `sequence`,
    `list`, `struct`), which `datasets` reads itself."""
    configs = card.front["features"]["configs"]
    if config is None:
        if len(configs) != 1:
            raise ValueError(f"{card.path}: {len(configs)} configs declared; name one of {', '.join(configs)}")
        config = next(iter(configs))
    return features_from_yaml(configs[config])


def features_from_yaml(spec: list[dict[str, Any]]) -> Any:
    """`datasets.Features` from a `dataset_info.features` list as dataset cards spell it in YAML (the reader
    `datasets` uses for cards itself; not public API, so it is called here only)."""
    import datasets

    return datasets.Features._from_yaml_list(spec)


def source_cards(cards_dir: Path = CARDS_DIR) -> dict[str, Card]:
    """Cards by source key (generated build cards live elsewhere)."""
    if not cards_dir.is_dir():
        return {}
    cards = (read_card(p) for p in sorted(cards_dir.glob("*.md")) if p.name != "README.md")
    return {card.front["key"]: card for card in cards}
