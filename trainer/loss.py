"""Bradley-Terry loss and TRL-style pair metrics, always in fp32.

`-logsigmoid(r_chosen - r_rejected - margin)`, averaged over pairs; the paper's final recipe uses neither the
margin term nor zero-centering (`center_coef * mean((r_chosen + r_rejected)^2)`), both off by default.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    chosen, rejected = chosen.float(), rejected.float()
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.float()
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


def pair_sums(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, Any]:
    """Sums over pairs, so micro-batches and ranks add up before dividing; a tie counts as wrong (benchmark rule).
    The sums stay on the rewards' device: adding them up waits for nothing until the step reads them."""
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    return {
        "pairs": float(chosen.numel()),
        "correct": (chosen > rejected).sum(),
        "margin": (chosen - rejected).sum(),
        "chosen": chosen.sum(),
        "rejected": rejected.sum(),
    }


def pair_metrics(sums: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """TRL's names: accuracy, margin, rewards/chosen, rewards/rejected (means over the summed pairs)."""
    n = max(float(sums.get("pairs", 0.0)), 1.0)
    return {
        f"{prefix}accuracy": float(sums.get("correct", 0.0)) / n,
        f"{prefix}margin": float(sums.get("margin", 0.0)) / n,
        f"{prefix}rewards/chosen": float(sums.get("chosen", 0.0)) / n,
        f"{prefix}rewards/rejected": float(sums.get("rejected", 0.0)) / n,
    }
