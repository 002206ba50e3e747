import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_train_speed_script_runs_both_modes_on_the_tiny_model() -> None:
    command = [sys.executable, "-m", "bench.train_speed", "--size", "tiny", "--pairs", "2", "--steps", "1",
               "--image", "56", "--answer", "32",
               "--modes", "naive", "padded", "fast", "fast-vit-kept", "fast-no-checkpointing", "fast-flex",
               "packed-flex"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["size"] == "tiny" and lines[0]["patches_per_step"] == 2 * 16
    check = lines[1]
    assert check["loss_naive"] == pytest.approx(check["loss_fast"], abs=1e-5)
    assert check["fast_reward_max_abs_diff"] < 1e-5 and check["fast_grad_rel_diff"] < 1e-4  # fp32: the same step
    assert check["loss_naive"] == pytest.approx(check["loss_fast_flex"], abs=1e-5)
    for mode in ("fast_flex", "packed_flex"):
        assert check[f"{mode}_reward_max_abs_diff"] < 1e-5 and check[f"{mode}_grad_rel_diff"] < 1e-4
    assert lines[0]["shared_prefix_row_tokens"] < lines[0]["sequence_tokens_per_step"]
    assert [line["mode"] for line in lines[2:]] == ["naive", "padded", "fast", "fast-vit-kept", "fast-no-checkpointing",
                                                    "fast-flex", "packed-flex"]  # fmt: skip
    assert all(line["pairs/s"] > 0 for line in lines[2:])


@pytest.mark.slow
def test_the_gpu_script_runs_every_case_on_the_tiny_model(tmp_path: Path) -> None:
    # A GPU machine runs bench/train_speed_gpu.sh in one call: on the tiny model, every case must run and write
    # its records (the exactness check included).
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TINY": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", "bench/train_speed_gpu.sh", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cases = {"3b": 5, "3b-spread": 2, "3b-long": 3, "7b": 3}  # modes per case
    assert done.stdout.splitlines() == [f"{case}: exit 0 ({2 + n} records)" for case, n in cases.items()]
    for case, n in cases.items():
        lines = [json.loads(line) for line in (tmp_path / f"{case}.jsonl").read_text().splitlines()]
        assert len(lines) == 2 + n and all(line["pairs/s"] > 0 for line in lines[2:]), case
        assert lines[1]["packed_flex_reward_max_abs_diff"] < 1e-4, case
    spread = json.loads((tmp_path / "3b-spread.jsonl").read_text().splitlines()[0])
    assert spread["answer_spread"] == 0.75 and spread["shared_prefix_padding"] > 0
    assert "torch" in (tmp_path / "machine.txt").read_text()
    assert (tmp_path / "3b.err").read_text().count("profile of one") == 2  # the default and the packed step


def test_attended_pairs_are_what_the_layout_lets_attend() -> None:
    from bench.train_speed import attended_pairs, make_model, synthetic_features
    from trainer import layout
    from trainer.data import collate

    model = make_model("tiny", 56, torch.device("cpu"), torch.float32)
    features = synthetic_features(model, 3, 8, 24, 56, spread=0.5)
    batch = collate(features, model.backbone.pad_token_id, layout="shared_prefix")
    part = layout.parts(batch.segments, batch.input_ids.shape[1])
    allowed = layout.attention_mask(part)[:, 0] & (part != layout.PAD)[:, :, None]  # real queries only
    assert attended_pairs(features, separate=False) == int(allowed.sum())
    # two sequences per pair: each causal over its own tokens, the prefix counted twice
    both = sum(n * (n + 1) // 2 for f in features for n in (len(f.chosen), len(f.rejected)))
    assert attended_pairs(features, separate=True) == both > attended_pairs(features, separate=False)


def test_vision_attended_pairs_are_the_windows_and_whole_images_of_the_tower() -> None:
    from bench.train_speed import make_model, synthetic_features, vision_attended_pairs

    model = make_model("tiny", 168, torch.device("cpu"), torch.float32)
    vision = model.backbone.model.config.vision_config
    features = synthetic_features(model, 2, 8, 24, 168)
    # 168 px: 12 x 12 patches, 6 x 6 merged tokens; a window is 112 px = 4 x 4 merged tokens, so the windows hold
    # 4x4, 4x2, 2x4 and 2x2 merged tokens (4 patches each); the full-attention layers see the whole image.
    assert [f.image_grid_thw.tolist() for f in features] == [[[1, 12, 12]]] * 2
    windows = sum((4 * rows * cols) ** 2 for rows, cols in [(4, 4), (4, 2), (2, 4), (2, 2)])
    full = len(vision.fullatt_block_indexes)
    per_image = full * 144**2 + (vision.depth - full) * windows
    assert vision_attended_pairs(model, features) == 2 * per_image == 2 * (20736 + 6400)
    assert vision_attended_pairs(model, [dataclasses.replace(f, pixel_values=None) for f in features[:1]]) == 0
