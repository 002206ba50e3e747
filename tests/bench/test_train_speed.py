import json
import subprocess
import sys
from pathlib import Path

import pytest

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
