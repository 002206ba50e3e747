"""BaseReward: a backbone without its LM head plus an MLP reward head on one token's final hidden state.

The paper's head is `Linear(h, h) -> SiLU -> Linear(h, 1)` on the last non-padding token; depth, width and
activation are options (its Table 2 ablation). The head runs in fp32 whatever the backbone's precision.

A saved model is a folder: `model.safetensors` (backbone and head), `reward_model.json` (what to rebuild),
`backbone/config.json`, and the tokenizer and image processor files. Loading never runs remote code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.backbone import Backbone, backbone_kind, load_image_processor
from trainer.layout import readout

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "none": nn.Identity}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class HeadConfig:
    layers: int = 2  # linear layers; 1 = a single Linear(h, 1)
    width: int | None = None  # hidden width; None = the backbone's hidden size
    activation: str = "silu"  # silu | tanh | relu | gelu | none

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ValueError(f"head layers must be >= 1, got {self.layers}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"head activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}")


class RewardHead(nn.Module):
    def __init__(self, hidden_size: int, config: HeadConfig) -> None:
        super().__init__()
        width = config.width or hidden_size
        layers: list[nn.Module] = []
        size = hidden_size
        for _ in range(config.layers - 1):
            layers += [nn.Linear(size, width), ACTIVATIONS[config.activation]()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        with torch.autocast(pooled.device.type, enabled=False):  # fp32 even inside the backbone's bf16 autocast
            return self.mlp(pooled.float()).squeeze(-1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """The mean over real tokens, or the hidden state of the first or last real token (left or right padding)."""
    length = attention_mask.shape[1]
    if how == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    if how == "first":
        index = attention_mask.long().argmax(dim=1)
    else:
        index = length - 1 - attention_mask.long().flip(dims=[1]).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


class RewardModel(nn.Module):
    def __init__(self, backbone: Backbone, head: HeadConfig, source: str = "") -> None:
        super().__init__()
        self.backbone = backbone
        self.head_config = head
        self.source = source  # what the backbone was loaded from (recorded, never re-fetched on load)
        self.head = RewardHead(backbone.hidden_size, head)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, segments: torch.Tensor | None = None, **visual: Any
    ) -> torch.Tensor:
        """One reward per sequence (fp32), chosen ones first for a shared-prefix batch (`segments`); `visual`: the
        image/video inputs of `Backbone.hidden_states`."""
        hidden = self.backbone.hidden_states(input_ids, attention_mask, segments, **visual)
        if segments is not None:
            packing = visual.get("packing")
            return self.head(readout(hidden, segments, None if packing is None else packing.inverse))
        return self.head(pool(hidden, attention_mask, self.backbone.pooling))

    # -- persistence ---------------------------------------------------------------------------------------
    def save(
        self, folder: Path, extra: dict[str, Any] | None = None, state: dict[str, torch.Tensor] | None = None
    ) -> None:
        """`state`: a full state dict gathered from a wrapped (DDP/FSDP) copy of this model."""
        from safetensors.torch import save_file, save_model

        folder.mkdir(parents=True, exist_ok=True)
        if state is None:
            save_model(self, str(folder / "model.safetensors"))
        else:
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
        self.backbone.model.config.save_pretrained(folder / "backbone")
        self.backbone.tokenizer.save_pretrained(folder)
        if self.backbone.image_processor is not None:
            self.backbone.image_processor.save_pretrained(folder)
        spec = {
            "format_version": FORMAT_VERSION,
            "backbone_source": self.source,
            "backbone_kind": self.backbone.kind,
            "head": asdict(self.head_config),
            **(extra or {}),
        }
        (folder / "reward_model.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path, dtype: torch.dtype = torch.float32) -> RewardModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from curation.errors import InputError
        from curation.failure import one_line

        spec_path = folder / "reward_model.json"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        if not spec_path.is_file():
            raise FileNotFoundError(f"{folder}: not a saved reward model (no reward_model.json)")
        try:
            spec = json.loads(spec_path.read_text())
            config = AutoConfig.from_pretrained(folder / "backbone", trust_remote_code=False)
            backbone_model = AutoModel.from_config(config, trust_remote_code=False, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            processor = None
            if backbone_kind(config) == "vision_language":
                processor = load_image_processor(folder)
            head = HeadConfig(**spec["head"])
            model = cls(Backbone(backbone_model, tokenizer, processor), head, spec["backbone_source"])
            load_model(model, str(folder / "model.safetensors"))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            # A damaged or foreign model folder (a truncated or pickled weights file, a config of another model
            # or one asking for custom code, a spec without its head): said in one line, naming the folder
            detail = one_line(exc)
            if "trust_remote_code" in detail:
                detail = "its configuration asks for custom code, which is never run"
            raise InputError(f"{folder}: not a readable reward model ({detail})") from None
        return model
