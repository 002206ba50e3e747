"""BaseReward: a backbone without its LM head plus an MLP reward head on one token's final hidden state.

The paper's head is `Linear(h, h) -> SiLU -> Linear(h, 1)` on the last non-padding token; depth, width and
activation are options (its Table 2 ablation). The head runs in fp32 whatever the backbone's precision.

A saved model is a folder: `model.safetensors` (backbone and head), `reward_model.json` (what to rebuild, the
sha256 of every other file as saved, and its own content's sha256), `backbone/config.json`, and the tokenizer and
image processor files. Loading never runs remote code, and refuses a folder changed since it was saved: an edited
spec, a file added, missing or changed (the weights' digest is checked where a model is published or resumed, and
their tensors' names, shapes and kinds by `check_saved`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from curation.io import sha256_file
from trainer.backbone import Backbone, backbone_kind, load_image_processor
from trainer.layout import readout

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "none": nn.Identity}
FORMAT_VERSION = 2  # 2: file digests and the spec's own digest are recorded, and required
SPEC = "reward_model.json"
SEAL = "content_sha256"  # a JSON record's digest of its other keys: an edit by hand is found


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
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != SPEC)
        spec = {
            "format_version": FORMAT_VERSION,
            "backbone_source": self.source,
            "backbone_kind": self.backbone.kind,
            "head": asdict(self.head_config),
            **(extra or {}),
            "sha256": {name: sha256_file(folder / name) for name in files},
        }
        (folder / SPEC).write_text(json.dumps(sealed(spec), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path, dtype: torch.dtype = torch.float32) -> RewardModel:
        """The saved model, its spec and every file but the weights checked against what was saved (the weights
        are read whole anyway; `check_saved` hashes them too). A checkpoint's own files may be beside them."""
        from safetensors.torch import load_model

        from curation.errors import InputError

        with _readable_model(folder):
            spec = read_spec(folder)
            digests = spec.get("sha256") or {}
            small = {name: digest for name, digest in digests.items() if not name.endswith(".safetensors")}
            if changed := changed_files(folder, small, {*digests, *BESIDE_A_MODEL} if digests else None):
                raise InputError(f"{folder}: not the model as saved ({changed[0]})")
            model = cls._rebuild(folder, spec, dtype)
            load_model(model, str(folder / "model.safetensors"))
        return model

    @classmethod
    def _rebuild(cls, folder: Path, spec: dict[str, Any], dtype: torch.dtype) -> RewardModel:
        """The saved model's modules, weights as initialised (on the meta device under `torch.device("meta")`)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        config = AutoConfig.from_pretrained(folder / "backbone", trust_remote_code=False)
        backbone_model = AutoModel.from_config(config, trust_remote_code=False, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        processor = load_image_processor(folder) if backbone_kind(config) == "vision_language" else None
        return cls(Backbone(backbone_model, tokenizer, processor), HeadConfig(**spec["head"]), spec["backbone_source"])


# What may lie beside a model's files where it is loaded: a checkpoint's state (`trainer.fit`), an export's card,
# settings and evaluation reports (`trainer.export`; a folder ends in "/"). Never published as part of a model.
BESIDE_A_MODEL = ("optimizer.safetensors", "trainer_state.json", "README.md", "fit_config.yaml", "eval.json", "evals/")
FLOATS = {"F16", "BF16", "F32", "F64"}


def check_saved(folder: Path) -> dict[str, Any]:
    """The saved model's spec, once the folder is known to load as it was saved: its spec unedited, exactly the
    files `save` wrote, each with the sha256 recorded in the spec (a folder saved before digests were recorded,
    format 1, has none to check), and weights holding each of the model's tensors, by name, shape and kind
    (floating point), and nothing else: the model is rebuilt from the folder's configuration on the meta device
    (no memory, no weights read). `InputError` naming the folder and the first problem."""
    from safetensors import safe_open

    from curation.errors import InputError

    with _readable_model(folder):
        spec = read_spec(folder)
        digests = spec.get("sha256")
        if digests is not None and (changed := changed_files(folder, digests, set(digests))):
            raise InputError(f"{folder}: not the model as saved ({changed[0]})")
        with torch.device("meta"):
            model = RewardModel._rebuild(folder, spec, torch.float32)
        expected = model.state_dict(keep_vars=True)  # the parameters themselves: a tied pair is one object
        with safe_open(str(folder / "model.safetensors"), "pt") as weights:
            saved = {name: (tuple(weights.get_slice(name).get_shape()), weights.get_slice(name).get_dtype())
                     for name in weights.keys()}  # fmt: skip
    aliases: dict[int, list[str]] = {}
    for name, tensor in expected.items():
        aliases.setdefault(id(tensor), []).append(name)
    problems = [f"{names[0]!r} missing" for names in aliases.values() if not any(n in saved for n in names)]
    problems += [f"{name!r} is not a tensor of this model" for name in sorted(set(saved) - set(expected))]
    for name in sorted(set(saved) & set(expected)):
        shape, kind = saved[name]
        if shape != tuple(expected[name].shape):
            problems.append(f"{name!r} has shape {list(shape)}, the model's {list(expected[name].shape)}")
        elif expected[name].is_floating_point() and kind not in FLOATS:
            problems.append(f"{name!r} holds {kind}, not floating-point numbers")
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise InputError(f"{folder}/model.safetensors: not the weights of the model its configuration builds "
                         f"({problems[0]}{more})")  # fmt: skip
    return spec


def changed_files(folder: Path, digests: dict[str, str], allowed: set[str] | None = None) -> list[str]:
    """What differs from the recorded sha256 of each named file in `folder`, one phrase per file; with `allowed`
    (names, and folders ending in "/"), also each file in `folder` (but the spec and hidden files) not among them."""
    changed = []
    for name, digest in sorted(digests.items()):
        path = folder / name
        if not path.is_file():
            changed.append(f"{name}: missing")
        elif sha256_file(path) != digest:
            changed.append(f"{name}: changed since it was saved (not the sha256 recorded with it)")
    if allowed is not None:
        # hidden files aside (`hidden`)
        held = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())
        held = (name for name in held if not hidden(name))
        folders = tuple(name for name in allowed if name.endswith("/"))
        added = sorted(name for name in held if name not in allowed and name != SPEC and not name.startswith(folders))
        changed += [f"{name}: added since it was saved" for name in added]
    return changed


def hidden(name: str) -> bool:
    """Whether a path in a model folder (relative, `/`-separated) is hidden, or in a hidden folder: an editor's
    or a download's (`.gitattributes`, `.cache/`), which no loader reads and no export publishes."""
    return any(part.startswith(".") for part in name.split("/"))


def sealed(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its content's sha256 under `SEAL` (`check_seal` finds a later edit)."""
    return {**record, SEAL: _content_sha256(record)}


def check_seal(record: Any, name: str, required: bool) -> dict[str, Any]:
    """`record` (from the JSON file `name`) if it is an object whose seal, where it has one, matches its content;
    `required`: it must have one. `ValueError` otherwise."""
    if not isinstance(record, dict):
        raise ValueError(f"{name} is not the object `trainer fit` writes")
    if SEAL not in record and required:
        raise ValueError(f"{name} has no {SEAL}: edited, or not written by `trainer fit`")
    if SEAL in record and record[SEAL] != _content_sha256({k: v for k, v in record.items() if k != SEAL}):
        raise ValueError(f"{name} changed since it was saved (not its {SEAL})")
    return record


def _content_sha256(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_spec(folder: Path) -> dict[str, Any]:
    """`folder`'s `reward_model.json`, checked: sealed (format 2 on), its file digests a map of names inside the
    folder. `FileNotFoundError` without folder or spec, `ValueError` for a spec that is not as saved."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not (folder / SPEC).is_file():
        raise FileNotFoundError(f"{folder}: not a saved reward model (no {SPEC})")
    _check_links(folder)
    spec = json.loads((folder / SPEC).read_text())
    check_seal(spec, SPEC, required=isinstance(spec, dict) and _format(spec) >= 2)
    digests = spec.get("sha256")
    if not digests and _format(spec) >= 2:
        raise ValueError(f"{SPEC} has no file digests (format {_format(spec)} records them)")
    check_digests(digests, SPEC)
    return spec


def _check_links(folder: Path) -> None:
    """Every file and folder a loader may read in `folder` (hidden ones are not read) by its real path: inside
    the folder, or in the blob store of the Hub cache whose snapshot the folder is (`<repo>/snapshots/<rev>/`
    beside `<repo>/blobs/` and `<repo>/refs/`, where each file is a link to its blob). `ValueError` otherwise."""
    root = folder.resolve()
    repo = root.parent.parent
    hub = root.parent.name == "snapshots" and (repo / "refs").is_dir()
    blobs = repo / "blobs" if hub else root
    for path in (folder, *folder.rglob("*")):
        relative = path.relative_to(folder)
        if hidden(relative.as_posix()):
            continue
        real = path.resolve()
        if not (real.is_relative_to(root) or real.is_relative_to(blobs)):
            raise ValueError(f"{relative.as_posix() or folder.name} is a link leading out of the model folder")


def check_digests(digests: Any, name: str) -> None:
    """A record's `sha256` map: relative names of files inside its folder (never `..` or an absolute path: a
    digest check reads each file; where the names lead, `_check_links` checks), or None."""
    if digests is None:
        return
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise ValueError(f"{name}: its sha256 is not a map of file names to digests")
    for file in digests:
        path = PurePosixPath(file)
        if not path.parts or path.is_absolute() or ".." in path.parts or "\\" in file:
            raise ValueError(f"{name}: its sha256 names {file!r}, not a file inside the folder")


def _format(spec: dict[str, Any]) -> int:
    version = spec.get("format_version", 1)
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


@contextmanager
def _readable_model(folder: Path) -> Iterator[None]:
    """A damaged or foreign model folder (a truncated or pickled weights file, a config of another model or one
    asking for custom code, a spec without its head): `InputError` in one line, naming the folder. A missing
    folder or spec stays `FileNotFoundError`."""
    from safetensors import SafetensorError

    from curation.errors import InputError
    from curation.failure import one_line

    try:
        yield
    except FileNotFoundError as exc:
        if exc.filename is None:  # ours: no folder, or no reward_model.json
            raise
        raise InputError(f"{folder}: not a readable reward model ({one_line(exc)})") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        detail = one_line(exc)
        if "trust_remote_code" in detail:
            detail = "its configuration asks for custom code, which is never run"
        raise InputError(f"{folder}: not a readable reward model ({detail})") from None
