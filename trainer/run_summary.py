"""What a run's files say about its training, for `trainer fit`'s last line and `trainer export`'s card: the draws
its steps reached and those skipped, never trained on (`data.json`), and how its steps ran (device, precision,
compiled layers: the `trained` record of its model's `reward_model.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Why a training draw is skipped, never trained on (`trainer.data` decides; torch is not imported here, so the
# workbench reads a run's files without it).
SKIP_VIDEO = "video pair on a backbone without video input"
SKIP_IMAGES_ON_TEXT = "image pair on a text-only backbone"
SKIP_TOO_LONG = "longer than max_length"
SKIP_PAD_TOKENS = "text holds the model's image/video pad tokens"
SKIP_BAD_IMAGE = "image that cannot be decoded, too large or too narrow"
SKIP_REASONS = (SKIP_VIDEO, SKIP_IMAGES_ON_TEXT, SKIP_TOO_LONG, SKIP_PAD_TOKENS, SKIP_BAD_IMAGE)


def steps_per_epoch(draws: int, global_batch: int) -> int:
    """Steps that train every draw once: the last one takes what is left, fewer than a global batch (its gradient
    is still the mean over its pairs)."""
    return -(-draws // global_batch)


def draws_reached(draws: int, global_batch: int, steps: int) -> int:
    """The training draws `steps` steps reach, every epoch's counted (`draws` an epoch): a step takes a global batch,
    an epoch's last what is left."""
    per_epoch = steps_per_epoch(draws, global_batch)
    epochs, within = divmod(steps, per_epoch) if per_epoch else (0, 0)
    return epochs * draws + min(within * global_batch, draws)


def read_data_report(run: Path) -> dict[str, Any]:
    """A run's `data.json` (`trainer fit` writes it: its split, the draws reached and skipped), or {} where it is
    missing or damaged."""
    try:
        report = json.loads((run / "data.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


# What to change where a reason skips many draws (`{max_length}`: the run's).
_REMEDIES = {
    SKIP_TOO_LONG: "raise max_length (--set max_length=N; this run: {max_length}) or leave the longer pairs out of "
    "the build (filters: max_tokens)",
    SKIP_IMAGES_ON_TEXT: "train a vision-language backbone (--model) or leave the image sources out of the mix",
    SKIP_VIDEO: "train a backbone with video input (Qwen2-VL, Qwen2.5-VL) or leave the video pairs out of the mix",
    SKIP_PAD_TOKENS: "leave those pairs out of the build (filters)",
    SKIP_BAD_IMAGE: "check the build's images, or raise max_pixels for the large ones",
}


def _number(value: float) -> str:
    """Two places at most, without trailing zeros (`0.37`, `1`, `2.5`); a tiny value keeps one digit."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value >= 0.01 else f"{value:.1g}"


@dataclass(frozen=True)
class Reach:
    """How far a run's steps went through its training draws, and the draws they skipped."""

    draws: int  # training draws an epoch
    reached: int  # draws the steps reached, every epoch's
    skipped: dict[str, int]  # draws skipped (never trained on), by reason, every epoch's

    @classmethod
    def of(cls, report: dict[str, Any], global_batch: int | None = None) -> Reach | None:
        """From a run's `data.json` (`global_batch`: the run's, for a report from before `draws_reached` was
        recorded), or None where it does not say."""
        try:
            draws = int(report["train_draws"])
            reached = report.get("draws_reached")
            if reached is None:
                reached = draws_reached(draws, int(global_batch), int(report["steps"]))  # type: ignore[arg-type]
            skipped = {str(k): int(v) for k, v in report.get("skipped_train_draws", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return cls(draws, int(reached), skipped)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def epochs_text(self) -> str:
        """`0.37 of an epoch of 43 draws`, `1 epoch of 43 draws`, `3 epochs of 43 draws`."""
        epochs = self.reached / self.draws if self.draws else 0.0
        shown = _number(epochs)
        what = f"{shown} of an epoch" if epochs < 1 else f"{shown} epoch{'' if shown == '1' else 's'}"
        return f"{what} of {self.draws:,} draws"

    def reasons_text(self) -> str:
        return ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.skipped.items(), key=lambda r: -r[1]))

    def text(self) -> str:
        """The one sentence every report gives: `16 draws reached (0.37 of an epoch of 43 draws), 11 of them (69%)
        skipped, never trained on: 11 longer than max_length`, or `..., none skipped`."""
        reached = f"{self.reached:,} draw{'' if self.reached == 1 else 's'} reached ({self.epochs_text()})"
        if not self.skipped_total:
            return f"{reached}, none skipped"
        share = f" ({round(100 * self.skipped_total / self.reached)}%)" if self.reached else ""
        return f"{reached}, {self.skipped_total:,} of them{share} skipped, never trained on: {self.reasons_text()}"

    def warning(self, max_length: int) -> str | None:
        """Where more than a tenth of the draws reached were skipped: how many, why, and what to change."""
        if not self.reached or self.skipped_total * 10 <= self.reached:
            return None
        share = round(100 * self.skipped_total / self.reached)
        remedies = "; ".join(_REMEDIES[r].format(max_length=max_length) for r in self.skipped if r in _REMEDIES)
        return (f"{share}% of the draws this run reached were skipped, never trained on ({self.skipped_total:,} of "
                f"{self.reached:,}: {self.reasons_text()})" + (f"; {remedies}" if remedies else ""))  # fmt: skip


def steps_text(report: dict[str, Any]) -> str:
    """`2 steps: ` for a report that records its steps, else nothing: the prefix of `Reach.text()` on a card or page."""
    steps = report.get("steps")
    return f"{steps:,} step{'' if steps == 1 else 's'}: " if isinstance(steps, int) else ""


def ran_text(segment: dict[str, Any]) -> str:
    """`steps 1-2: cpu, 1 process, float32, layers not compiled` for one stretch of a run's steps (a resumed run has
    one per start); `how they ran was not recorded` for a stretch from before it was."""
    start, end = segment["steps"]
    steps = f"step {end}" if end == start + 1 else f"steps {start + 1}-{end}"
    if "device" not in segment:
        return f"{steps}: how they ran was not recorded (a checkpoint from before it was)"
    processes = f"{segment['processes']} process{'' if segment['processes'] == 1 else 'es'}"
    precision = "bf16 autocast (fp32 weights)" if segment["dtype"] == "bfloat16" else segment["dtype"]
    compiled = "layers compiled" if segment["compiled"] else "layers not compiled"
    return f"{steps}: {segment['device']}, {processes}, {precision}, {compiled}"


def applied(setting: str, value: Any, segments: list[dict[str, Any]]) -> str | None:
    """Whether a setting that applies on CUDA alone (`bf16`, `compile`) did, where it was on: `not applied`, `applied
    in part` (in some stretches of the run), or None (off, applied wherever recorded, or nothing recorded)."""
    took_effect = {"bf16": lambda s: s["dtype"] == "bfloat16", "compile": lambda s: s["compiled"] is True}.get(setting)
    recorded = [s for s in segments if "device" in s]
    if took_effect is None or value is not True or not recorded:
        return None
    used = [took_effect(s) for s in recorded]
    if all(used):
        return None
    if any(used):
        return "applied in part"
    return "not applied" if len(recorded) == len(segments) else "not applied in the steps recorded"
