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


def test_ids_are_blake2b_of_the_documented_json() -> None:
    """The ids are pinned to their definition: blake2b-128 of `json.dumps(payload, ensure_ascii=False,
    separators=(",", ":"))` with the normalized prompt turns, the image hashes, then chosen and rejected."""
    import hashlib
    import json

    tricky = ['quote " backslash \\ slash /', "tab\tnew\nline \u2028 \u0000 \x7f", "é 中文 😀 \U0001f600",
              "  spaced   out  "]  # fmt: skip
    for i, text in enumerate(tricky):
        prompt = [{"role": "system", "content": text}, {"role": "user", "content": tricky[-1 - i]}]
        images = ["ab" * 32, "cd" * 32][: i % 3]
        turns = [[m["role"], normalize_text(m["content"])] for m in prompt]
        payload = [turns, images]

        def digest(value: object) -> str:
            data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            return hashlib.blake2b(data, digest_size=16).hexdigest()

        assert compute_prompt_id(prompt, images) == digest(payload)
        answers = [normalize_text(text), normalize_text(tricky[i - 1])]
        assert compute_pair_id(prompt, images, text, tricky[i - 1]) == digest([*payload, *answers])
