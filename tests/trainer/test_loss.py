import math

import pytest
import torch

from trainer.loss import bradley_terry_loss, pair_metrics, pair_sums


def test_bradley_terry_matches_a_hand_computation() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    # -log(sigmoid(d)) = log(1 + exp(-d)) for d = 1, 0, -2
    expected = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)


def test_margin_and_centering_terms() -> None:
    chosen, rejected = torch.tensor([2.0]), torch.tensor([1.0])
    with_margin = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5]))
    assert with_margin.item() == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-6)
    centered = bradley_terry_loss(chosen, rejected, center_coef=0.1)
    assert centered.item() == pytest.approx(math.log1p(math.exp(-1)) + 0.1 * 9.0, rel=1e-6)


def test_loss_is_fp32_for_bf16_rewards() -> None:
    loss = bradley_terry_loss(torch.tensor([1.0], dtype=torch.bfloat16), torch.tensor([0.0], dtype=torch.bfloat16))
    assert loss.dtype == torch.float32


def test_metrics_count_ties_as_wrong() -> None:
    a = pair_sums(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5]))
    b = pair_sums(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0]))
    metrics = pair_metrics({k: a[k] + b[k] for k in a})  # micro-batches add up before dividing
    assert metrics["accuracy"] == 0.5
    assert metrics["margin"] == pytest.approx((1 + 0 - 1 + 2) / 4)
    assert metrics["rewards/chosen"] == pytest.approx(1.125)
