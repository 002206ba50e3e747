"""`FitConfig`: every setting of a training run in one dataclass, from YAML with command-line overrides.

Defaults follow the paper where it says something (lr 3e-6, global batch 128, 2-layer SiLU head, plain
Bradley-Terry) and common practice where it does not (one epoch, 3% warmup then cosine, bf16 on GPU).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from curation.errors import InputError
from curation.recipe import load_unique_yaml
from curation.sources.base import parse_options

# Released Qwen-VL checkpoints allow up to 12.8M pixels (16,384 tokens) per image, the usual cause of OOM in
# reward training; without an explicit bound, images are capped at 1280 tokens (transformers' own class default).
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
MAX_SEED = 2**32 - 1  # the seed is mixed with step numbers into torch's 64-bit seed


@dataclass(frozen=True)
class FitConfig:
    model: str = "tiny"  # `tiny`, a local folder or a Hub id
    shards: list[str] = field(default_factory=list)  # build folders, optionally `DIR=WEIGHT`
    seed: int = 0
    # optimisation
    lr: float = 3e-6
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    epochs: int = 1
    max_steps: int | None = None  # stop earlier than `epochs` would
    global_batch: int = 128  # pairs per optimizer step = micro_batch x accumulation x world size
    micro_batch: int = 4
    max_grad_norm: float = 1.0
    # model
    head_layers: int = 2
    head_width: int | None = None
    head_activation: str = "silu"
    freeze_vision: bool = False
    gradient_checkpointing: bool = False  # decoder layers
    checkpoint_vision: bool = False  # the vision blocks too (costly: the ViT is recomputed)
    checkpoint_keep_layers: int = 0  # the first N decoder layers keep their activations (faster, more memory)
    bf16: bool = True  # on GPU only; CPU runs stay fp32
    compile: bool = True  # torch.compile the decoder layers, on GPU only (measured in bench/train_speed.py)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # auto: DDP when distributed
    # loss
    use_margin: bool = False
    center_coef: float = 0.0
    # data
    max_length: int = 2048
    min_pixels: int | None = None  # None: the image processor's own lower bound
    max_pixels: int | None = None  # None: the processor's bound, at most 1280 x 28 x 28 (1280 tokens per image)
    padding_side: Literal["right", "left"] = "right"
    # `shared_prefix`: one row [prompt | chosen | rejected] per pair (exact; falls back to `padded` where the
    # backbone cannot take it: encoders, non-Qwen decoders, flash attention, sliding windows). Under sdpa its mask
    # is dense (rows x length^2): cheap at a few thousand tokens; for rows of ~8K tokens use `attention: flex`.
    # `packed`: those rows run through the decoder packed end to end, several to a row of `pack_length` tokens,
    # without padding (a token sees only its own pair); meant for `attention: flex`.
    layout: Literal["shared_prefix", "padded", "packed"] = "shared_prefix"
    pack_length: int = 8192
    # the language model's attention: `sdpa`, or `flex` (torch's flex_attention with a block mask: the shared prefix
    # without a dense mask; Qwen decoders only; on CPU, training falls back to the same mask run densely)
    attention: Literal["sdpa", "flex"] = "sdpa"
    num_workers: int = 0  # processes that tokenize and decode images ahead of the model (0: in the trainer)
    eval_fraction: float = 0.02
    eval_max_pairs: int = 1000
    # cross-fitting (`trainer audit`): the first build's pairs fall in `folds` folds by a hash of prompt_id and seed;
    # the run trains without fold `fold` (which its model then judges). 0: no folds.
    folds: int = 0
    fold: int = 0
    # bookkeeping
    eval_every: int = 0  # steps; 0 = at the end only
    save_every: int = 500  # steps; 0 = at the end only (an interrupted run then keeps nothing)
    # the newest this many checkpoints are kept, older ones removed once a newer one is complete (a checkpoint holds
    # the weights and the optimizer's two moments: several times the model's size); 0 keeps every one
    keep_checkpoints: int = 2
    log_every: int = 1

    def __post_init__(self) -> None:
        for name in ("global_batch", "micro_batch", "log_every", "epochs", "pack_length"):
            if (value := getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        for name in ("num_workers", "eval_every", "save_every", "keep_checkpoints"):
            if (value := getattr(self, name)) < 0:
                raise InputError(f"{name} must be >= 0, got {value}")
        if not 0 <= self.eval_fraction < 1:
            raise InputError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.folds == 1 or self.folds < 0 or not 0 <= self.fold < max(self.folds, 1):
            raise InputError(f"folds must be 0 or at least 2, and fold in 0..folds-1 (got {self.folds}, {self.fold})")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be >= 1 (or unset: the epochs decide), got {self.max_steps}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if not (math.isfinite(self.warmup_ratio) and 0 <= self.warmup_ratio <= 1):
            raise InputError(f"warmup_ratio must be in [0, 1] (the share of the steps spent warming up), got "
                             f"{self.warmup_ratio}")  # fmt: skip
        for name in ("min_pixels", "max_pixels", "eval_max_pairs"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        if self.min_pixels is not None and self.min_pixels > (self.max_pixels or DEFAULT_MAX_PIXELS):
            bound = (
                f"max_pixels {self.max_pixels}" if self.max_pixels else f"the default max_pixels {DEFAULT_MAX_PIXELS}"
            )
            raise InputError(f"min_pixels {self.min_pixels} is above {bound}")
        for name in ("lr", "weight_decay", "max_grad_norm", "center_coef"):
            value = getattr(self, name)
            # a gradient clipped to norm 0 is no gradient: the run would train nothing, without a word
            positive = name in ("lr", "max_grad_norm")
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise InputError(f"{name} must be a finite number >= 0{' (and > 0)' if positive else ''}, "
                                 f"got {value}")  # fmt: skip
        if self.head_layers < 1 or (self.head_width is not None and self.head_width < 1):
            raise InputError("head_layers and head_width must be >= 1")
        if self.max_length < 2:
            raise InputError(f"max_length must be >= 2 tokens, got {self.max_length}")
        from trainer.model import ACTIVATIONS

        if self.head_activation not in ACTIVATIONS:
            raise InputError(f"head_activation {self.head_activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        for spec in self.shards:
            shard_weight(spec)

    def accumulation(self, world: int) -> int:
        per_step = self.micro_batch * world
        if self.global_batch % per_step:
            raise InputError(
                f"global_batch {self.global_batch} is not a multiple of micro_batch x world size = {per_step}"
            )
        return self.global_batch // per_step

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def shard_weight(spec: str) -> float:
    """The weight of a `--shards DIR=WEIGHT` spec (1 without one): a finite number >= 0."""
    folder, _, text = spec.partition("=")
    if not folder:
        raise InputError(f"--shards {spec}: no build folder before the =")
    try:
        weight = float(text) if text else 1.0
    except ValueError:
        raise InputError(f"--shards {spec}: the weight after = must be a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise InputError(f"--shards {spec}: the weight must be a finite number >= 0")
    return weight


def load_config(path: Path | None, overrides: dict[str, Any]) -> FitConfig:
    """YAML file (optional) then overrides; unknown keys and bad types are errors naming the key."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = load_unique_yaml(path.read_text(encoding="utf-8"), path) or {}  # a key twice: an error
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:  # one line, wherever the YAML error points
            raise InputError(f"{path}: not a readable settings file: {' '.join(str(exc).split())}") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping of settings")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("shards"), str):
        values["shards"] = [values["shards"]]
    return parse_options(FitConfig, values, str(path) if path else "trainer config")
