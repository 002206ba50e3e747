from curation.cards import CARDS_DIR, declared_features, source_cards
from curation.sources import REGISTRY


def test_every_adapter_has_a_card_and_every_card_an_adapter() -> None:
    cards = source_cards()
    assert sorted(cards) == sorted(REGISTRY), f"cards in {CARDS_DIR} and adapters differ"


def test_cards_agree_with_their_adapters() -> None:
    for key, card in source_cards().items():
        info = REGISTRY[key].info
        assert card.path.name == f"{key}.md"
        assert (card.front["hub_id"], card.front["license"], card.front["kind"]) == (
            info.hub_id,
            info.license,
            info.kind,
        ), key
        assert isinstance(card.front["pitfalls"], list) and card.front["pitfalls"], key
        assert card.body, f"{key}: the card needs a human summary"


def test_every_card_with_a_hub_id_declares_its_features() -> None:
    for key, card in source_cards().items():
        if card.front["hub_id"] is None:
            continue
        features = card.front.get("features")
        assert isinstance(features, dict), f"{key}: no declared features"
        assert isinstance(features.get("from"), str) and features["from"], f"{key}: features without provenance"
        assert isinstance(features.get("verified"), bool), f"{key}: say whether the features were verified"
        assert isinstance(features.get("configs"), dict) and features["configs"], f"{key}: no config declared"
        for config in features["configs"]:
            assert declared_features(card, config), f"{key}: config {config} declares no feature"


def test_the_readme_says_how_each_source_was_checked() -> None:
    """README's source table agrees with the cards: verified features are the published `dataset_info`."""
    readme = (CARDS_DIR.parent / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip() for line in readme.splitlines()
            if line.startswith("| `")}  # fmt: skip
    for key, card in source_cards().items():
        features = card.front.get("features") or {}
        expected = (
            "no Hub id" if card.front["hub_id"] is None
            else "published `dataset_info`" if features.get("verified") else "reconstructed (unverified)"
        )  # fmt: skip
        assert rows.get(key) == expected, key
