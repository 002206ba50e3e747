import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from tests.conftest import RunIngest, image_bytes, write_image, write_jsonl

BENCH = "mm-rlhf-rewardbench/mm_reward_bench.jsonl"


def test_image_and_video_rows(tmp_path: Path, run_ingest: RunIngest) -> None:
    root = tmp_path / "media"
    write_image(root / "mcq" / "073712.png", seed=1)
    for i, name in enumerate(("0002.jpg", "0001.jpg", "0010.jpg")):
        write_image(root / "video" / "abc" / name, seed=10 + i)
    (root / "video" / "abc" / "notes.txt").write_text("not a frame")
    rows = [
        {
            "id": "073712_1",
            "image": "mcq/073712.png",
            "prompt": "Which choice?",
            "chosen": "Answer: C",
            "rejected": "Answer: A",
            "chosen_reason": "correct",
            "rejected_reason": "wrong",
        },
        {"id": "abc_2", "video": "video/abc", "prompt": "What?", "chosen": "A dog runs.", "rejected": "Nothing."},
    ]
    result = run_ingest("mm_rlhf", write_jsonl(tmp_path / "dpo_pairs.jsonl", rows), images_root=root)
    assert not result.rejects
    image, video = result.pairs
    assert (image["chosen"], image["rejected"]) == ("Answer: C", "Answer: A")
    assert image["prompt"] == [{"role": "user", "content": "<image>\nWhich choice?"}]
    assert (image["modality"], image["category"], len(image["images"])) == ("image", "mcq", 1)
    assert result.meta(0) == {"id": "073712_1", "chosen_reason": "correct", "rejected_reason": "wrong"}

    frames = [image_bytes(seed, fmt="JPEG") for seed in (11, 10, 12)]  # 0001, 0002, 0010
    by_sha = {img["sha256"]: img["bytes"] for img in result.images}
    assert [by_sha[sha] for sha in video["images"]] == frames
    assert video["prompt"] == [{"role": "user", "content": "<image>\n<image>\n<image>\nWhat?"}]
    assert (video["modality"], video["category"], video["chosen"]) == ("video", "video", "A dog runs.")


def test_rejects(tmp_path: Path, run_ingest: RunIngest) -> None:
    write_image(tmp_path / "media" / "long" / "1.png")
    base = {"id": "x", "prompt": "Q?", "chosen": "a", "rejected": "b"}
    rows = [
        {**base, "image": "long/missing.png"},
        {**base, "video": "video/missing"},
        {**base},
        {"id": "x", "image": "long/1.png", "responses": ["a", "b"], "ranks": [1, 2]},  # data.jsonl-like
        {**base, "image": "long/1.png", "rejected": None},
    ]
    result = run_ingest("mm_rlhf", write_jsonl(tmp_path / "dpo_pairs.jsonl", rows), images_root=tmp_path / "media")
    assert [r["reason"] for r in result.rejects] == [
        "image not found",
        "image not found",
        "missing field",
        "unsupported layout",
        "missing field",
    ]
    assert result.rejects[2]["detail"] == "dpo_pairs.jsonl:2: 'image'"


def test_real_rewardbench_rows_share_the_format(shared_data: Path, tmp_path: Path, run_ingest: RunIngest) -> None:
    # The benchmark file has dpo_pairs.jsonl's row format; images are made up, one per referenced path.
    path = shared_data / BENCH
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    root = tmp_path / "media"
    for i, rel in enumerate(sorted({r["image"] for r in rows if "image" in r})):
        write_image(root / rel, seed=i)
    for i, rel in enumerate(sorted({r["video"] for r in rows if "video" in r})):
        write_image(root / rel / "0001.jpg", seed=1000 + i)
        write_image(root / rel / "0002.jpg", seed=2000 + i)
    result = run_ingest("mm_rlhf", path, images_root=root)
    assert result.summary.pairs == 170 and not result.rejects
    categories = Counter(p["category"] for p in result.pairs)
    assert categories == {"mcq": 42, "long": 37, "short": 34, "safety": 32, "video": 25}
    assert Counter(p["modality"] for p in result.pairs) == {"image": 145, "video": 25}
    assert all(p["prompt"][-1]["content"].count("<image>") == len(p["images"]) for p in result.pairs)
    assert len({json.loads(p["meta"])["id"] for p in result.pairs}) == 46


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any) -> None:
    """The card's (reconstructed) dpo_pairs.jsonl features: all strings, `image` or `video` null where the row uses
    the other. `datasets` reads the file with these columns whichever way it is served."""
    features = declared_features(source_cards()["mm_rlhf"], "dpo_pairs")
    root = tmp_path / "media"
    write_image(root / "long" / "5.png", seed=1)
    for i, name in enumerate(("0002.jpg", "0001.jpg")):
        write_image(root / "video" / "yt1" / name, seed=10 + i)
    base = {"chosen_reason": "accurate", "rejected_reason": "hallucinates", "image": None, "video": None}

    def pair_row(item_id: str, prompt: str, chosen: str | None, rejected: str, **media: str) -> dict[str, Any]:
        return {**base, "id": item_id, "prompt": prompt, "chosen": chosen, "rejected": rejected, **media}

    rows = [
        pair_row("5_1", "Describe.", "A harbour.", "A road.", image="long/5.png"),
        pair_row("5_2", "Describe.", "A road.", "Nothing.", image="long/5.png"),
        pair_row("yt1_1", "What happens?", "A dog runs.", "?", video="video/yt1"),
        pair_row("5_3", "Describe.", None, "Nothing.", image="long/5.png"),
    ]
    for way, result in hub_ingest("mm_rlhf", rows, features, images_root=root).items():
        first, second, video = result.pairs
        assert (first["chosen"], first["rejected"], second["chosen"]) == ("A harbour.", "A road.", "A road."), way
        assert first["prompt"] == [{"role": "user", "content": "<image>\nDescribe."}], way
        assert (first["category"], first["modality"]) == ("long", "image"), way
        assert first["images"] == second["images"] == [hashlib.sha256(image_bytes(1)).hexdigest()], way
        frames = [hashlib.sha256(image_bytes(seed, fmt="JPEG")).hexdigest() for seed in (11, 10)]  # 0001, 0002
        assert (video["images"], video["category"], video["modality"]) == (frames, "video", "video"), way
        assert video["prompt"] == [{"role": "user", "content": "<image>\n<image>\nWhat happens?"}], way
        assert result.meta(0) == {"id": "5_1", "chosen_reason": "accurate", "rejected_reason": "hallucinates"}, way
        assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
            ("missing field", "'chosen' is null")
        ], way


def test_the_hub_id_reads_dpo_pairs_not_the_default_config(
    tmp_path: Path, run_ingest: RunIngest, monkeypatch: Any
) -> None:
    """The repository's default config is a parquet `data/` folder of other rows; the pairs are `dpo_pairs.jsonl`
    beside it. The Hub id and a local snapshot of the repository both read that file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import curation.readers

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.table({"question": ["ranked?"], "responses": [["a", "b"]]}),
                   repo / "data" / "train-00000-of-00001.parquet")  # fmt: skip
    row = {"id": "1", "image": "mcq/1.png", "prompt": "2+2?", "chosen": "4", "rejected": "5"}
    write_jsonl(repo / "dpo_pairs.jsonl", [row])
    write_image(tmp_path / "media" / "mcq" / "1.png", seed=1)
    local = run_ingest("mm_rlhf", repo, images_root=tmp_path / "media")
    with monkeypatch.context() as patch:
        patch.setattr(curation.readers, "is_hub_id", lambda location: True)
        hub = run_ingest("mm_rlhf", repo, images_root=tmp_path / "media")
    for result in (local, hub):
        assert [(p["prompt"][0]["content"], p["chosen"]) for p in result.pairs] == [("<image>\n2+2?", "4")]
        assert not result.rejects
    from curation.sources import get_adapter
    from curation.sources.base import ReadOptions

    adapter = get_adapter("mm_rlhf")()
    assert adapter.files_note(str(repo)) == (
        f"{repo}: read dpo_pairs.jsonl, this source's file in its repository (--config, --data-dir or --split read "
        "the repository's tables instead)"
    )
    asked = get_adapter("mm_rlhf")({}, ReadOptions(split="train"))  # a split asked for: the repository's tables
    assert "train-00000-of-00001.parquet" in [p.name for p in asked.local_files(str(repo))]
