import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import prompts_build
from tests.trainer.conftest import pair_images, pair_row
from trainer.backbone import load_backbone
from trainer.data import SKIP_TOO_LONG, Entry, ImageTable, PairData, PairFeatures, collate, featurize, weighted
from trainer.loss import bradley_terry_loss
from trainer.model import HeadConfig, RewardModel


def tiny_model() -> RewardModel:
    torch.manual_seed(1)
    return RewardModel(load_backbone("tiny"), HeadConfig(), source="tiny")


def assert_one_pass_equals_two(model: RewardModel, feature: PairFeatures, visual: dict) -> None:
    """Rewards and every gradient of the 2-row pass (visual input encoded once) = two passes, each encoding it."""
    batch = collate([feature], model.backbone.pad_token_id)
    rewards = model(**batch.model_inputs())
    bradley_terry_loss(rewards[:1], rewards[1:]).backward()
    joint = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    def alone(ids: list[int]) -> torch.Tensor:
        return model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), **visual)

    chosen, rejected = alone(feature.chosen), alone(feature.rejected)
    bradley_terry_loss(chosen, rejected).backward()
    separate = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert torch.allclose(rewards, torch.cat([chosen, rejected]), atol=1e-6)
    assert joint.keys() == separate.keys()
    assert any("visual" in n for n in joint)  # the vision tower is trained through the shared features
    for name in joint:
        assert torch.allclose(joint[name], separate[name], atol=1e-6), name


def test_one_forward_per_pair_equals_separate_forwards() -> None:
    model = tiny_model()
    feature = featurize(
        model.backbone, pair_row("What is shown?", "A red square.", "A cat", images=1), pair_images(1), 512
    )
    assert not isinstance(feature, str)
    visual = {"pixel_values": feature.pixel_values, "image_grid_thw": feature.image_grid_thw, "image_index": [0]}
    assert_one_pass_equals_two(model, feature, visual)


def test_mixed_image_and_text_batch_equals_each_pair_alone() -> None:
    model = tiny_model()
    model.eval()
    rows = [pair_row("Hello?", "Hi, how can I help?", "What.", images=0),
            pair_row("Compare these.", "The first is brighter.", "Same.", images=2),
            pair_row("And this?", "A pattern of noise.", "A dog.", images=1)]  # fmt: skip
    features = [
        featurize(model.backbone, r, pair_images(len(r["images"]), seed=10 * i), 512) for i, r in enumerate(rows)
    ]
    with torch.no_grad():
        together = model(**collate(features, model.backbone.pad_token_id).model_inputs())
        for i, feature in enumerate(features):
            alone = model(**collate([feature], model.backbone.pad_token_id).model_inputs())
            assert torch.allclose(together[[i, 3 + i]], alone, atol=1e-5)


def test_text_only_batch_still_runs_the_vision_tower_when_distributed() -> None:
    """A rank without images must run the ViT and produce (zero) ViT gradients too, or distributed training hangs."""
    model = tiny_model()
    model.train()
    model.backbone.vision_always = True  # what the trainer sets
    feature = featurize(model.backbone, pair_row("Hi", "Hello!", "No."), [], 512)
    batch = collate([feature], model.backbone.pad_token_id)
    rewards = model(**batch.model_inputs())
    bradley_terry_loss(rewards[:1], rewards[1:]).backward()
    visual = [p.grad for p in model.backbone.model.visual.parameters()]
    assert all(g is not None and not g.any() for g in visual)  # present, and exactly zero


def test_too_long_pairs_are_skipped_with_a_reason_and_long_prompts_lose_their_start() -> None:
    backbone = load_backbone("tiny")
    long_answer = featurize(backbone, pair_row("Q", "x" * 600, "short"), [], 256)
    assert long_answer == SKIP_TOO_LONG
    row = pair_row("p" * 400, "the answer", "another answer")
    feature = featurize(backbone, row, [], 256)
    assert not isinstance(feature, str)
    assert len(feature.chosen) == 256
    assert backbone.tokenizer.decode(feature.chosen).endswith("the answer<|im_end|>\n")
    images = featurize(backbone, pair_row("p" * 400, "a", "b", images=1), pair_images(1), 64)
    assert images == SKIP_TOO_LONG  # image tokens are never cut


def test_an_image_that_cannot_be_read_skips_its_pair_with_a_reason() -> None:
    """Truncated bytes, a strip the processor refuses (20000 x 3), a decompression bomb: a skip, never a crash."""
    from PIL import Image

    from trainer.data import SKIP_BAD_IMAGE

    def png(width: int, height: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", (width, height)).save(buffer, "PNG")
        return buffer.getvalue()

    backbone = load_backbone("tiny")
    row = pair_row("What is it?", "a", "b", images=1)
    for data in (pair_images(1)[0][:100], png(20_000, 3), png(10_000, 10_000)):
        assert featurize(backbone, row, [data], 256) == SKIP_BAD_IMAGE
    assert not isinstance(featurize(backbone, row, pair_images(1), 256), str)


def test_video_patches_follow_the_image_layout_and_one_video_is_encoded_once() -> None:
    """Two identical frames give exactly the image processor's patches (the layout check); a video pair in one
    2-row pass equals two passes that each encode the video."""
    model = tiny_model()
    from PIL import Image

    image = Image.open(io.BytesIO(pair_images(1)[0])).convert("RGB")
    video, video_grid = model.backbone.video_inputs([image, image])
    pixels, grid = model.backbone.image_inputs([image])
    assert torch.equal(video_grid, grid) and torch.allclose(video, pixels, atol=1e-5)
    row = {**pair_row("What happens?", "A ball rolls by.", "Nothing.", images=3), "modality": "video"}
    feature = featurize(model.backbone, row, pair_images(3), 512)
    assert not isinstance(feature, str) and feature.pixel_values is None
    assert feature.video_grid_thw.tolist() == [[2, 6, 4]]  # 3 frames padded to 2 temporal patches
    visual = {"pixel_values_videos": feature.pixel_values_videos, "video_grid_thw": feature.video_grid_thw,
              "video_index": [0]}  # fmt: skip
    assert_one_pass_equals_two(model, feature, visual)


def test_weighted_draws_whole_passes_then_a_hash_ordered_remainder() -> None:
    entries = [Entry(0, i, f"p{i}") for i in range(10)]
    assert sorted(d.row for d in weighted(entries, 1.0, seed=0)) == list(range(10))
    drawn = weighted(entries, 2.5, seed=0)
    assert len(drawn) == 25
    copies = [sum(1 for d in drawn if d.row == i) for i in range(10)]
    assert sorted(copies) == [2] * 5 + [3] * 5
    assert weighted(entries, 0.3, seed=0) == weighted(entries, 0.3, seed=0)
    assert len(weighted(entries, 0.3, seed=0)) == 3


def test_split_and_order_are_deterministic_and_disjoint(demo_build: Path) -> None:
    a = PairData.open([str(demo_build)], seed=0, eval_fraction=0.3)  # seed 0 holds out upsampled pairs
    b = PairData.open([str(demo_build)], seed=0, eval_fraction=0.3)
    assert a.train == b.train and a.eval == b.eval
    assert not {e.pair_id for e in a.train} & {e.pair_id for e in a.eval}
    # every row is trained on or held out; a held-out pair is evaluated once, however many copies the mix made
    ids = a.builds[0].table.column("pair_id").to_pylist()
    held = [pid for pid in ids if pid in {e.pair_id for e in a.eval}]
    assert len(a.train) + len(held) == len(ids)
    assert len(held) > len(a.eval) == len({e.pair_id for e in a.eval})  # the demo upsamples mm_rlhf
    counts = a.counts[str(demo_build)]
    assert (counts["rows"], counts["pairs"], counts["eval"]) == (len(ids), len(set(ids)), len(a.eval))
    assert counts["eval_rows"] == len(held) == counts["rows"] - counts["train_draws"]  # weight 1: a draw per row
    assert a.epoch_order(0) == b.epoch_order(0) != a.epoch_order(1)
    two = PairData.open([str(demo_build), f"{demo_build}=0.5"], seed=0, eval_fraction=0.3)
    assert len(two.train) == len(a.train) + round(0.5 * len(a.train))
    assert two.eval == a.eval  # nor twice for being in two builds


def test_image_table_finds_every_image_by_hash(demo_build: Path) -> None:
    path = demo_build / "images" / "images.parquet"
    table = ImageTable(path)
    rows = pq.read_table(path).to_pylist()
    assert rows and all(table.read(r["sha256"]) == r["bytes"] for r in rows)
    with pytest.raises(KeyError, match="not found"):
        table.read("0" * 64)


def test_held_out_pairs_of_several_builds_come_in_hash_order(demo_build: Path, tmp_path: Path) -> None:
    """`eval_max_pairs` takes the first held-out pairs: a sample of every build, not the first build's alone."""
    data = PairData.open([str(demo_build), str(prompts_build(tmp_path, 40))], seed=0, eval_fraction=0.5)
    builds = [e.build for e in data.eval]
    assert set(builds) == {0, 1} and builds != sorted(builds)
    assert set(builds[:6]) == {0, 1}


def test_the_pairs_of_one_prompt_are_all_trained_on_or_all_held_out(tmp_path: Path) -> None:
    """Held-out accuracy is over prompts the model never saw: a prompt's pairs fall on one side of the split."""
    data = PairData.open([str(prompts_build(tmp_path, 20, pairs_each=3))], seed=0, eval_fraction=0.5)
    table = data.builds[0].table
    prompt_of = dict(zip(table.column("pair_id").to_pylist(), table.column("prompt_id").to_pylist(), strict=True))
    trained = {prompt_of[e.pair_id] for e in data.train}
    held = {prompt_of[e.pair_id] for e in data.eval}
    assert len(trained | held) == 20 and trained and held and not trained & held
    assert len(data.eval) == 3 * len(held)  # every pair of a held-out prompt


def test_a_shard_edited_with_its_time_set_back_is_refused_in_the_same_process(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The once-per-process digest is keyed by the change time too: `touch -r` or `rsync -t` can set back the
    modification time, not the change time."""
    import os
    import shutil

    from curation.build_dir import BuildError
    from trainer.data import Build

    build = tmp_path / "b"
    shutil.copytree(demo_build, build)
    Build.open(str(build))
    shard = sorted((build / "shards").glob("*.arrow"))[0]
    before = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0x01  # inside the stream's last bytes, the file still the same size
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    monkeypatch.setenv("LOCAL_RANK", "1")  # a stray variable outside torchrun (no WORLD_SIZE): still checked
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(BuildError, match="shards edited since their build"):
        Build.open(str(build))
