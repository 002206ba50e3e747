import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from tests.conftest import image_bytes, write_image, write_jsonl

QUESTION = "<image>\nDescribe the image in exactly three sentences, in French."


def sha(seed: int) -> str:
    return hashlib.sha256(image_bytes(seed)).hexdigest()


def test_llama_factory_variants(tmp_path: Path, run_ingest) -> None:
    images = tmp_path / "images"
    write_image(images / "mmif" / "1.png", seed=1)
    write_image(images / "mmif" / "2.png", seed=2)
    rows = [
        {
            "id": "mmif-0",
            "conversations": [{"from": "human", "value": QUESTION}],
            "chosen": {"from": "gpt", "value": "Trois phrases. Deux. Une."},
            "rejected": {"from": "gpt", "value": "Two sentences in English."},
            "images": ["mmif/1.png"],
        },
        {
            "system": "Follow every constraint.",
            "messages": [
                {"role": "user", "content": "<image>\nWhat is it?"},
                {"role": "assistant", "content": "A chart."},
                {"role": "user", "content": "<image>\nAnd this one? Answer in one word."},
            ],
            "chosen": "Map.",
            "rejected": "It is a map of Europe.",
            "images": ["mmif/1.png", "mmif/2.png"],
        },
        {
            "messages": [{"role": "user", "content": "List three colors."}],
            "chosen": "Red, green, blue.",
            "rejected": "Red.",
        },
        {
            "conversations": [{"from": "human", "value": QUESTION}],
            "chosen": ["a"],
            "rejected": "b",
            "images": ["mmif/1.png"],
        },
        {
            "conversations": [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": "a"}],
            "chosen": "a",
            "rejected": "b",
            "images": ["mmif/1.png"],
        },
        {
            "conversations": [{"from": "human", "value": QUESTION}],
            "chosen": "a",
            "rejected": "b",
            "images": ["mmif/9.png"],
        },
        {
            "conversations": [{"from": "human", "value": QUESTION}],
            "chosen": "a",
            "rejected": {"from": "human", "value": "b"},
        },
    ]
    res = run_ingest("mmif", write_jsonl(tmp_path / "MM-IFDPO-23k.jsonl", rows), images_root=images)
    single, multi, text = res.pairs
    assert single["prompt"] == [{"role": "user", "content": QUESTION}]
    assert (single["chosen"], single["rejected"]) == ("Trois phrases. Deux. Une.", "Two sentences in English.")
    assert (single["images"], single["modality"], single["tie"]) == ([sha(1)], "image", False)
    assert res.meta(0) == {"id": "mmif-0"}
    assert multi["prompt"] == [
        {"role": "system", "content": "Follow every constraint."},
        {"role": "user", "content": "<image>\nWhat is it?"},
        {"role": "assistant", "content": "A chart."},
        {"role": "user", "content": "<image>\nAnd this one? Answer in one word."},
    ]
    assert (multi["chosen"], multi["images"], multi["modality"]) == ("Map.", [sha(1), sha(2)], "multi_image")
    assert (text["images"], text["modality"], text["meta"]) == ([], "text", "{}")
    assert [(r["source_row"], r["reason"]) for r in res.rejects] == [
        ("MM-IFDPO-23k.jsonl:3", "wrong type"),
        ("MM-IFDPO-23k.jsonl:4", "no user turn"),
        ("MM-IFDPO-23k.jsonl:5", "image not found"),
        ("MM-IFDPO-23k.jsonl:6", "unknown role"),
    ]


def test_embedded_image_bytes(tmp_path: Path, run_ingest) -> None:
    rows = [
        {
            "conversations": [{"from": "human", "value": "Caption this in five words."}],
            "chosen": {"from": "gpt", "value": "A dog runs on grass."},
            "rejected": {"from": "gpt", "value": "Dog."},
            "images": [{"bytes": image_bytes(3), "path": None}],
        }
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = run_ingest("mmif", path)
    assert res.pairs[0]["prompt"] == [{"role": "user", "content": "<image>\nCaption this in five words."}]
    assert res.pairs[0]["images"] == [sha(3)]


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest) -> None:
    """The card's (reconstructed) LLaMA-Factory ranking features: `conversations` a list of {from, value} records,
    `chosen`/`rejected` single {from, value} structs, `images` a list of paths under the images root."""
    features = declared_features(source_cards()["mmif"])
    write_image(tmp_path / "images" / "mmif" / "1.png", seed=1)
    write_image(tmp_path / "images" / "mmif" / "2.png", seed=2)

    def ranked(turns: list[str], chosen: str, rejected: str, images: list[str]) -> dict:
        roles = ("human", "gpt")
        return {
            "conversations": [{"from": roles[i % 2], "value": v} for i, v in enumerate(turns)],
            "chosen": {"from": "gpt", "value": chosen},
            "rejected": {"from": "gpt", "value": rejected},
            "images": images,
        }

    rows = [
        ranked([QUESTION], "Trois phrases. Deux. Une.", "Two sentences in English.", ["mmif/1.png"]),
        ranked(["<image>\nWhat?", "A chart.", "<image>\nAnd this?"], "Map.", "A map.", ["mmif/1.png", "mmif/2.png"]),
        ranked(["List three colors."], "Red, green, blue.", "Red.", []),
        ranked([QUESTION, "a"], "b", "c", ["mmif/1.png"]),
    ]
    for way, result in hub_ingest("mmif", rows, features, images_root=tmp_path / "images").items():
        single, multi, text = result.pairs
        assert single["prompt"] == [{"role": "user", "content": QUESTION}], way
        assert (single["chosen"], single["rejected"]) == ("Trois phrases. Deux. Une.", "Two sentences in English."), way
        assert (single["images"], single["modality"]) == ([sha(1)], "image"), way
        assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user"], way
        assert (multi["chosen"], multi["images"], multi["modality"]) == ("Map.", [sha(1), sha(2)], "multi_image"), way
        assert (text["images"], text["modality"], text["chosen"]) == ([], "text", "Red, green, blue."), way
        assert [r["reason"] for r in result.rejects] == ["no user turn"], way


def test_a_snapshot_of_the_repository_reads_the_v2_dpo_file(tmp_path: Path, run_ingest) -> None:
    """The repository holds SFT and DPO files of two versions; the Hub id, and a local snapshot of it, read
    `v2/dpo/mmif_23k_4o_qwen2_5.json`, a JSON list (SFT rows would be rejects for a missing `chosen`)."""
    import json

    from curation.sources import get_adapter

    repo = tmp_path / "MMIF-23k"
    pair = {"conversations": [{"from": "human", "value": "Name a colour."}], "chosen": {"from": "gpt", "value": "Red."},
            "rejected": {"from": "gpt", "value": "Red, green."}}  # fmt: skip
    sft = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    for name, rows in (("v2/dpo/mmif_23k_4o_qwen2_5.json", [pair]), ("v2/sft/mmif_23k_sft.json", [sft]),
                       ("v1/dpo/mmif_dpo.json", [pair, pair])):  # fmt: skip
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(json.dumps(rows))
    result = run_ingest("mmif", repo)
    assert [(p["source_row"], p["chosen"]) for p in result.pairs] == [("v2/dpo/mmif_23k_4o_qwen2_5.json:0", "Red.")]
    assert not result.rejects
    assert get_adapter("mmif")().files_note(str(repo)) == (
        f"{repo}: read v2/dpo/mmif_23k_4o_qwen2_5.json, this source's file in its repository (--config, --data-dir "
        "or --split read the repository's tables instead)"
    )
