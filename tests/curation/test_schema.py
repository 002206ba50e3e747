from curation.schema import PAIR_SCHEMA, SCHEMA_VERSION, compute_pair_id, compute_prompt_id, normalize_text

PROMPT = [{"role": "user", "content": "What is in the image?\n<image>"}]


def test_normalize_text_nfc_and_whitespace() -> None:
    assert normalize_text("  Cafe\u0301 \n\t au  lait ") == "Caf\u00e9 au lait"


def test_pair_id_ignores_whitespace_and_unicode_form() -> None:
    variant = [{"role": "user", "content": "What is in  the image?\n<image> "}]
    assert compute_pair_id(PROMPT, ["a"], "A ca\u0301t.", "A dog.") == compute_pair_id(
        variant, ["a"], " A c\u00e1t. ", "A dog."
    )


def test_pair_id_depends_on_orientation_images_and_roles() -> None:
    base = compute_pair_id(PROMPT, ["a"], "yes", "no")
    assert base != compute_pair_id(PROMPT, ["a"], "no", "yes")
    assert base != compute_pair_id(PROMPT, ["b"], "yes", "no")
    assert base != compute_pair_id([{"role": "system", "content": PROMPT[0]["content"]}], ["a"], "yes", "no")
    assert len(base) == 32 and int(base, 16) >= 0


def test_prompt_id_shared_by_pairs_of_one_prompt() -> None:
    assert compute_prompt_id(PROMPT, ["a"]) == compute_prompt_id(PROMPT, ["a"])
    assert compute_prompt_id(PROMPT, ["a"]) != compute_prompt_id(PROMPT, [])
    assert compute_prompt_id(PROMPT, ["a", "b"]) != compute_prompt_id(PROMPT, ["b", "a"])


def test_schema_is_versioned() -> None:
    assert PAIR_SCHEMA.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
    assert {"pair_id", "prompt_id", "images", "meta", "tie", "margin"} <= set(PAIR_SCHEMA.names)
