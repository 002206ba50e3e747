"""`trainer fit`: Bradley-Terry training of a reward model on built shards, single process or under `torchrun`.

Run layout (`--out RUN`):
- `config.yaml` (the resolved `FitConfig`), `data.json` (pairs per build, train/eval split, the draws the steps
  reached and the skipped ones);
- `metrics.jsonl` (TRL-style names: loss, accuracy, margin, rewards/chosen, rewards/rejected, lr, pairs/s,
  tokens/s; eval/* for the held-out split) and `tb/` for TensorBoard;
- `checkpoints/step-NNNNNN/`: a loadable model plus `optimizer.safetensors` and `trainer_state.json`; its
  `reward_model.json` records how the steps ran (`trained`: device, processes, dtype, compiled layers; a stretch
  per start of a resumed run) and, with `trainer_state.json`, the sha256 of each file (a resume refuses a
  checkpoint changed since it was saved);
- `model/`: the final model (`trainer predict --model RUN`).

Exact resume: the data order is a function of (seed, epoch), the random state is reseeded from (seed, step)
at each step, and the optimizer state is restored, so a resumed run repeats the losses of an uninterrupted one.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn

from curation.io import atomic_file, sha256_file, write_text
from trainer.backbone import load_backbone
from trainer.config import FitConfig
from trainer.data import (
    SPLIT_BY,
    Batch,
    Entry,
    Featurizer,
    PairData,
    PairFeatures,
    StepBatches,
    collate,
    with_positions,
)
from trainer.loss import bradley_terry_loss, pair_metrics, pair_sums
from trainer.model import SEAL, HeadConfig, RewardModel, changed_files, check_digests, check_seal, read_spec, sealed
from trainer.run_summary import SKIP_REASONS, draws_reached, steps_per_epoch


class TrainingError(RuntimeError):
    pass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: float, device: torch.device) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_model(config: FitConfig) -> RewardModel:
    backbone = load_backbone(config.model, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    backbone.use_attention(config.attention)
    head = HeadConfig(config.head_layers, config.head_width, config.head_activation)
    torch.manual_seed(config.seed)  # the head's initialisation
    return RewardModel(backbone, head, source=config.model)


def _sharded(config: FitConfig, world: Dist) -> bool:
    return config.strategy == "fsdp" and world.world > 1


def _wrap(model: RewardModel, config: FitConfig, world: Dist, device: torch.device) -> nn.Module:
    if world.world == 1:
        return model
    if _sharded(config, world):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if _bf16(config) else None
        kwargs = {"mp_policy": policy} if policy else {}
        for layer in _shard_units(model):
            fully_shard(layer, **kwargs)
        fully_shard(model.head, mp_policy=MixedPrecisionPolicy(param_dtype=torch.float32))  # the head stays fp32
        fully_shard(model, **kwargs)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def make_optimizer(
    params: list[nn.Parameter], lr: float, weight_decay: float, device: torch.device, sharded: bool
) -> torch.optim.AdamW:
    """AdamW, fused into one kernel on CUDA: the default multi-tensor form makes several passes over every weight
    and state with full-size temporaries (measured in bench/train_speed.py). FSDP-sharded weights keep it."""
    fused = device.type == "cuda" and not sharded
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def _shard_units(model: RewardModel) -> list[nn.Module]:
    """FSDP's units: the decoder layers and the vision blocks."""
    visual = getattr(model.backbone.model, "visual", None)
    return model.backbone.decoder_layers() + (list(visual.blocks) if visual is not None else [])


def _bf16(config: FitConfig) -> bool:
    return config.bf16 and torch.cuda.is_available()


# Settings a resumed run may change: how it runs, not what it learns (the layouts and attention kernels are
# exact rearrangements of one computation, checked against the naive step).
HOW_IT_RUNS = frozenset({"save_every", "keep_checkpoints", "eval_every", "log_every", "num_workers",
                         "eval_max_pairs", "compile", "attention", "layout", "pack_length", "padding_side",
                         "gradient_checkpointing", "checkpoint_vision", "checkpoint_keep_layers",
                         "strategy"})  # fmt: skip


class Trainer:
    def __init__(self, config: FitConfig, out: Path, resume: bool = False) -> None:
        self.config = config
        self.out = out
        self.dist = init_distributed()
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if not config.shards:
            raise TrainingError("no shards: pass --shards BUILD_DIR (a `curate build` output)")
        self.data = PairData.open(config.shards, config.seed, config.eval_fraction, config.folds, config.fold)
        self.accumulation = config.accumulation(self.dist.world)
        if not self.data.train:
            # the audit's fold is named only where one is involved: an audit's fold run, or rows it left out
            builds = "; ".join(
                f"{name}: {c['pairs']} pairs, {c['eval']} held out, "
                + (f"{c['left_out']} rows left out by the audit's fold, " if config.folds or c["left_out"] else "")
                + f"weight {c['weight']:g}"
                for name, c in self.data.counts.items()
            )
            raise TrainingError(f"no training draws ({builds})")
        self.steps_per_epoch = steps_per_epoch(len(self.data.train), config.global_batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.model = build_model(config)
        if config.freeze_vision and self.model.backbone.kind == "vision_language":
            self.model.backbone.model.visual.requires_grad_(False)
        if config.gradient_checkpointing:
            self.model.backbone.enable_checkpointing(config.checkpoint_vision, config.checkpoint_keep_layers)
        self.model.to(self.device)
        # Text-only passes run a dummy image through the vision tower: distributed ranks must (same collectives),
        # and a single process does too, so a run trains the same model whatever the world size.
        self.model.backbone.vision_always = True
        self.skipped_train: Counter[str] = Counter()  # every draw, across epochs
        self.trained_pairs = 0  # by this process's steps (resumed: since the checkpoint)
        self.featurize_eval = Featurizer(self.data, self.model.backbone, config.max_length)  # reset per evaluation
        self.start_step = 0
        self.earlier: list[dict[str, Any]] = []  # how the steps before a resumed run's checkpoint ran
        self.last_checkpoint: Path | None = None
        if resume:
            self._restore_weights()
        self.wrapped = _wrap(self.model, config, self.dist, self.device)
        compiled = config.compile and self.device.type == "cuda"  # compile and bf16 apply on CUDA alone
        if compiled:  # after wrapping, as FSDP2 asks
            self.model.backbone.compile_layers()
        # How this process's steps run, recorded with each checkpoint (a resumed run adds a stretch per start)
        device = f"cuda ({torch.cuda.get_device_name(self.device)})" if cuda else "cpu"
        self.how = {"device": device, "processes": self.dist.world, "compiled": compiled,
                    "dtype": "bfloat16" if _bf16(config) else "float32"}  # fmt: skip
        params = [p for p in self.wrapped.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(
            params, config.lr, config.weight_decay, self.device, _sharded(config, self.dist)
        )
        if resume and self.last_checkpoint is not None:
            self._restore_optimizer()
        self.warmup = max(1, round(config.warmup_ratio * self.total_steps)) if config.warmup_ratio else 0
        self.tb: Any = None

    # -- data ----------------------------------------------------------------------------------------------
    def _steps(self) -> Any:
        """This rank's prepared steps, in order, from `num_workers` processes (0: in this process)."""
        steps = StepBatches(self.data, self.model.backbone, max_length=self.config.max_length,
                            padding_side=self.config.padding_side, layout=self.config.layout,
                            pack_length=self.config.pack_length,
                            global_batch=self.config.global_batch,
                            micro_batch=self.config.micro_batch, accumulation=self.accumulation,
                            rank=self.dist.rank, world=self.dist.world, start=self.start_step,
                            total=self.total_steps)  # fmt: skip
        workers = self.config.num_workers
        return torch.utils.data.DataLoader(steps, batch_size=None, shuffle=False, num_workers=workers,
                                           prefetch_factor=2 if workers else None)  # fmt: skip

    # -- steps ---------------------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if _bf16(self.config) else nullcontext()

    def _rewards(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            rewards = self.wrapped(**batch.model_inputs())
        return rewards[: batch.pairs], rewards[batch.pairs :]

    def _dummy_batch(self) -> Batch:
        """A two-token stand-in for a micro-batch whose pairs were all skipped: every rank runs the same passes."""
        token = self.model.backbone.pad_token_id
        return collate([PairFeatures("", [token, token], [token, token], None, None, None)], token)

    def _batches(self, groups: list[list[Entry]], featurize: Featurizer) -> list[Batch | None]:
        backbone = self.model.backbone
        pad, side = backbone.pad_token_id, backbone.padding_side(self.config.padding_side)
        layout = backbone.layout(self.config.layout)
        return [with_positions(collate(f, pad, side, layout, self.config.pack_length), backbone) if f else None
                for f in map(featurize, groups)]  # fmt: skip

    def _train_step(self, step: int, batches: list[Batch | None]) -> dict[str, float]:
        started = time.perf_counter()
        torch.manual_seed(self.config.seed * 1_000_003 + step)  # dropout and the like repeat on resume
        self.wrapped.train()
        pairs_here = sum(b.pairs for b in batches if b is not None)
        # Every pair weighs the same across ranks: DDP/FSDP average gradients over ranks, so scale by world / all.
        pairs_all = self.dist.sum([float(pairs_here)], self.device)[0]
        sums: Counter[str] = Counter()
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            sync = self.wrapped.no_sync() if hasattr(self.wrapped, "no_sync") and not last else nullcontext()
            with sync:  # DDP all-reduces gradients once, after the last micro-batch
                if batch is None:
                    with self._autocast():
                        rewards = self.wrapped(**self._dummy_batch().to(self.device).model_inputs())
                    (rewards.sum() * 0.0).backward()
                    continue
                sums["tokens"] += batch.tokens  # counted on the host copy
                batch = batch.to(self.device)
                chosen, rejected = self._rewards(batch)
                margin = batch.margin if self.config.use_margin else None
                loss = bradley_terry_loss(chosen, rejected, margin, self.config.center_coef)
                (loss * batch.pairs * self.dist.world / pairs_all).backward()
            # device tensors: no micro-batch waits for the one before it to finish
            sums.update(pair_sums(chosen, rejected))
            sums["loss"] += loss.detach() * batch.pairs
        totals = self._all_sum(sums)
        if not math.isfinite(totals["loss"]):
            where = self.last_checkpoint or "none yet"
            raise TrainingError(f"non-finite loss at step {step + 1}; stopped, last good checkpoint: {where}")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), self.config.max_grad_norm)
        lr = self.config.lr * lr_factor(step, self.total_steps, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if totals["pairs"]:  # a step whose draws were all skipped learns nothing: no decay, no stale momentum
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        self.trained_pairs += int(totals["pairs"])
        # a step whose draws were all skipped has no loss or accuracy (a 0 would read as a measurement)
        means = {"loss": totals["loss"] / totals["pairs"], **pair_metrics(totals)} if totals["pairs"] else {
            "loss": None, **dict.fromkeys(pair_metrics(totals))}  # fmt: skip
        return {
            **means,
            "lr": lr,
            "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm),
            "pairs": totals["pairs"],
            "pairs/s": totals["pairs"] / seconds,
            "tokens/s": totals["tokens"] / seconds,
        }

    def _all_sum(self, sums: Counter[str]) -> dict[str, float]:
        """The step's sums (device tensors or numbers) added over ranks; the one place the step waits."""
        keys = ["pairs", "correct", "margin", "chosen", "rejected", "loss", "tokens"]
        return dict(zip(keys, self.dist.sum([float(sums[k]) for k in keys], self.device), strict=True))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.wrapped.eval()
        entries = self.data.eval[: self.config.eval_max_pairs][self.dist.rank :: self.dist.world]
        micro = self.config.micro_batch
        groups = [entries[i : i + micro] for i in range(0, len(entries), micro)]
        rounds = int(self.dist.max(len(groups), self.device))  # ranks run the same number of passes
        sums: Counter[str] = Counter()
        self.featurize_eval.skipped.clear()
        for batch in self._batches(groups, self.featurize_eval) + [None] * (rounds - len(groups)):
            if batch is None:
                with self._autocast():
                    self.wrapped(**self._dummy_batch().to(self.device).model_inputs())
                continue
            chosen, rejected = self._rewards(batch.to(self.device))
            sums.update(pair_sums(chosen, rejected))
            sums["loss"] += bradley_terry_loss(chosen, rejected) * batch.pairs
        totals = self._all_sum(sums)
        if not totals["pairs"]:
            return {}
        # eval/pairs: those scored, of eval/held_out (the run's held-out pairs; eval_max_pairs caps the first)
        return {"eval/loss": totals["loss"] / totals["pairs"], **pair_metrics(totals, "eval/"),
                "eval/pairs": totals["pairs"], "eval/held_out": len(self.data.eval)}  # fmt: skip

    # -- the run -------------------------------------------------------------------------------------------
    def run(self, on_step: OnStep | None = None) -> dict[str, Any]:
        report = on_step if on_step is not None and self.dist.main else lambda done, total, record: None
        report(self.start_step, self.total_steps, None)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.yaml", yaml.safe_dump(self.config.as_dict(), sort_keys=True))
            self._trim_metrics(self.start_step)
        last: dict[str, float] = {}
        for step, (batches, skipped) in enumerate(self._steps(), start=self.start_step):
            self.skipped_train.update(skipped)
            record = self._train_step(step, batches)
            done = step + 1
            if self.config.eval_every and done % self.config.eval_every == 0 and done < self.total_steps:
                record |= self.evaluate()
            if done == self.total_steps:
                record |= self.evaluate()
            record |= {"step": done, "epoch": round(done / self.steps_per_epoch, 4)}
            if self.dist.main and (
                done % self.config.log_every == 0 or done == self.total_steps or "eval/loss" in record
            ):
                self._log(record)
            if self.config.save_every and done % self.config.save_every == 0 and done < self.total_steps:
                self.save_checkpoint(done)
            report(done, self.total_steps, record)
            last = record
        if self.start_step == 0 and not self.trained_pairs:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.skipped_train.most_common()) or "none"
            raise TrainingError(f"no training pair could be trained on: every draw of {self.total_steps} steps was "
                                f"skipped ({reasons}); no model written")  # fmt: skip
        self.save_checkpoint(self.total_steps)
        # before the model: a run with its model in place says what it trained on (a collective: every rank counts)
        self._write_data_report()
        if self.dist.main:
            assert self.last_checkpoint is not None
            final = self.out / "model"
            tmp = final.with_name("model.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.last_checkpoint, tmp, ignore=shutil.ignore_patterns("optimizer.*", "trainer_state.*"))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        self.dist.barrier()
        return last

    def close(self) -> None:
        """Close the TensorBoard writer (its thread writes into the run folder, which a failed run's cleanup
        removes next), release the wrapped model, then the process group: left to interpreter teardown, gloo or
        the DDP reducer can abort the process after a successful run."""
        if self.tb:
            self.tb.close()
        self.wrapped = self.model
        gc.collect()
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def _log(self, record: dict[str, float]) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: metrics.jsonl holds everything
                self.tb = False
            else:
                self.tb = SummaryWriter(str(self.out / "tb"))
        if self.tb:
            for key, value in record.items():
                if key not in ("step", "epoch") and value is not None:
                    self.tb.add_scalar(f"train/{key}" if "/" not in key or key.startswith("rewards") else key,
                                       value, record["step"])  # fmt: skip

    def _trim_metrics(self, step: int) -> None:
        """On resume, drop records past the checkpoint so the log reads as one uninterrupted run."""
        path = self.out / "metrics.jsonl"
        if path.is_file():
            kept = []
            for line in path.read_bytes().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):  # cut off when the run was killed, or damaged bytes
                    continue
            with atomic_file(path, durable=False) as file:
                file.write(b"".join(line + b"\n" for line in kept))

    def _write_data_report(self) -> None:
        """Pairs per build and split, and the skipped pairs of all ranks (train: per draw; eval: last pass)."""
        train = self.dist.sum([float(self.skipped_train[r]) for r in SKIP_REASONS], self.device)
        held_out = self.dist.sum([float(self.featurize_eval.skipped[r]) for r in SKIP_REASONS], self.device)
        if not self.dist.main:
            return
        report = {
            "builds": self.data.counts,
            "train_draws": len(self.data.train),
            "eval_pairs": len(self.data.eval),  # distinct pairs
            "distinct_pairs": len({p for b in self.data.builds for p in b.table.column("pair_id").to_pylist()}),
            "distinct_prompts": len({p for b in self.data.builds for p in b.table.column("prompt_id").to_pylist()}),
            "split_by": SPLIT_BY,  # what the held-out split fell by
            "data": self.data.identity(),  # the builds by their shards' sha256 and weight, wherever they lie
            "skipped_train_draws": {r: int(n) for r, n in zip(SKIP_REASONS, train, strict=True) if n},
            "skipped_eval": {r: int(n) for r, n in zip(SKIP_REASONS, held_out, strict=True) if n},
            "steps": self.total_steps,
            # every epoch's draws the steps reached: with max_steps, fewer than the epochs' draws
            "draws_reached": draws_reached(len(self.data.train), self.config.global_batch, self.total_steps),
        }
        write_text(self.out / "data.json", json.dumps(report, indent=2, sort_keys=True) + "\n")  # whole or not at all

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _full_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (get_model_state_dict(self.model, options=options),
                get_optimizer_state_dict(self.model, self.optimizer, options=options))  # fmt: skip

    def save_checkpoint(self, step: int) -> None:
        from safetensors.torch import save_file

        model_state, optim_state = self._full_state()  # a collective under FSDP: every rank takes part
        skipped = self.dist.sum([float(self.skipped_train[r]) for r in SKIP_REASONS], self.device)
        if self.dist.main:
            folder = self.out / "checkpoints" / f"step-{step:06d}"
            tmp = folder.with_name(folder.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            # this start's stretch of steps, how they ran; none for a resumed run already at its end
            stretch = [{"steps": [self.start_step, step], **self.how}] if step > self.start_step else []
            trained = [*self.earlier, *stretch]
            extra = {"fit_config": self.config.as_dict(), "steps": step, "trained": trained,
                     "data": self.data.identity()}  # fmt: skip
            self.model.save(tmp, extra, model_state)
            tensors = {f"{fqn}/{key}": value.contiguous() for fqn, state in optim_state["state"].items()
                       for key, value in state.items() if isinstance(value, torch.Tensor)}  # fmt: skip
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            groups = [{k: v for k, v in g.items()} for g in optim_state["param_groups"]]
            state = {"step": step, "param_groups": groups, "data": self.data.identity(),
                     "steps_per_epoch": self.steps_per_epoch, "split_by": SPLIT_BY,
                     "skipped_train": {r: int(n) for r, n in zip(SKIP_REASONS, skipped, strict=True) if n},
                     "sha256": {"optimizer.safetensors": sha256_file(tmp / "optimizer.safetensors")}}  # fmt: skip
            (tmp / "trainer_state.json").write_text(json.dumps(sealed(state), indent=2) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            self.last_checkpoint = folder
            if self.config.keep_checkpoints:  # once the new one is complete: never fewer than asked for
                older = checkpoints(self.out)[: -self.config.keep_checkpoints]
                for stale in older:  # renamed first: one half removed (a crash) is never taken for a checkpoint
                    shutil.rmtree(stale.with_name(stale.name + ".stale"), ignore_errors=True)  # one left before
                    os.replace(stale, stale.with_name(stale.name + ".stale"))
                for stale in (self.out / "checkpoints").glob("step-*.stale"):
                    shutil.rmtree(stale, ignore_errors=True)
        self.dist.barrier()

    def _restore_weights(self) -> None:
        folder = latest_checkpoint(self.out)
        if folder is None:
            return  # nothing saved yet: start from the beginning
        with _readable_checkpoint(folder):
            self._restore_weights_from(folder)

    def _restore_weights_from(self, folder: Path) -> None:
        from safetensors.torch import load_model

        spec = read_spec(folder)
        saved = spec.get("fit_config", {})
        state = json.loads((folder / "trainer_state.json").read_text())
        check_seal(state, "trainer_state.json", required=SEAL in spec)  # sealed together from format 2 on
        check_digests(state.get("sha256"), "trainer_state.json")
        # the files as saved, and no other (a checkpoint from before digests were recorded has none to check)
        digests = {**(spec.get("sha256") or {}), **(state.get("sha256") or {})}
        allowed = {*digests, "trainer_state.json"} if SEAL in spec else None
        if damaged := changed_files(folder, digests, allowed):
            raise TrainingError(f"{folder}: a damaged checkpoint ({damaged[0]}); remove it to resume from the one "
                                "before, or start a new run")  # fmt: skip
        if spec.get("steps", state["step"]) != state["step"]:
            raise ValueError(f"trainer_state.json is at step {state['step']}, its model at step {spec['steps']}")
        now = self.config.as_dict()
        changed = [f"{k} ({saved[k]} in the checkpoint, {now[k]} now)" for k in now
                   if k in saved and k not in HOW_IT_RUNS and k != "shards" and saved[k] != now[k]]  # fmt: skip
        if "data" in state:  # the builds by content and weight: moved is the same, rebuilt in place is not
            same_data = state["data"] == json.loads(json.dumps(self.data.identity()))
        else:  # a checkpoint from before contents were recorded: by folder
            same_data = saved.get("shards", now["shards"]) == now["shards"]
        if not same_data:  # a shard edited in place keeps the manifest's digests: `Build.open` refuses it
            changed.insert(0, "shards (the builds' contents or weights)")
        # Runs before the epoch's last partial step was trained had floor(draws / global_batch) steps an epoch.
        planned = state.get("steps_per_epoch", len(self.data.train) // self.config.global_batch)
        if planned != self.steps_per_epoch:
            changed.append(f"steps per epoch ({planned} in the checkpoint, {self.steps_per_epoch} now)")
        if (split_by := state.get("split_by", "pair_id")) != SPLIT_BY:  # checkpoints from before it was recorded
            changed.append(f"the held-out split (by {split_by} in the checkpoint, by {SPLIT_BY} now)")
        if changed:  # the data order or the schedule would differ: not a continuation
            raise TrainingError(f"{folder}: cannot resume with changed settings: {', '.join(changed)}")
        load_model(self.model, str(folder / "model.safetensors"))
        self.start_step = state["step"]
        # a checkpoint from before `trained` was recorded: its steps' stretch, not how it ran
        self.earlier = spec.get("trained") or [{"steps": [0, self.start_step]}]
        if self.dist.main:  # all ranks' counts so far; the report sums over ranks, so they come back on one
            self.skipped_train.update(state.get("skipped_train", {}))
        self.last_checkpoint = folder

    def _restore_optimizer(self) -> None:
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        assert self.last_checkpoint is not None
        with _readable_checkpoint(self.last_checkpoint):
            tensors = load_file(str(self.last_checkpoint / "optimizer.safetensors"))
        state: dict[str, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            fqn, _, key = name.rpartition("/")
            state.setdefault(fqn, {})[key] = value
        with _readable_checkpoint(self.last_checkpoint):
            groups = json.loads((self.last_checkpoint / "trainer_state.json").read_text())["param_groups"]
        set_optimizer_state_dict(
            self.model,
            self.optimizer,
            {"state": state, "param_groups": groups},
            options=StateDictOptions(full_state_dict=True),
        )


# Called on the main process with (steps done, total steps, the step's record): once before the first step with no
# record (a resumed run: its checkpoint's step), then after each step.
OnStep = Callable[[int, int, "dict[str, Any] | None"], None]


@contextmanager
def _readable_checkpoint(folder: Path) -> Iterator[None]:
    """A checkpoint whose files cannot be read (cut short, not safetensors, not JSON) is a `TrainingError` naming
    it, with what to do."""
    from safetensors import SafetensorError

    from curation.failure import one_line

    try:
        yield
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise TrainingError(f"{folder}: a damaged checkpoint ({one_line(exc)}); remove it to resume from the one "
                            "before, or start a new run") from None  # fmt: skip


def fit(config: FitConfig, out: Path, resume: bool = False, on_step: OnStep | None = None) -> dict[str, Any]:
    """Train into `out`. A run that fails before its first checkpoint in a folder that held no run leaves the
    folder as it found it (its hidden files, such as the lock, aside): a retry starts clean."""
    fresh = not _run_entries(out)
    try:
        trainer = Trainer(config, out, resume)
        try:
            return trainer.run(on_step)
        finally:
            trainer.close()
    except BaseException:
        main = int(os.environ.get("RANK", "0")) == 0
        if fresh and main and not any((out / "checkpoints").glob("step-*")):
            for entry in _run_entries(out):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        raise


def checkpoints(out: Path) -> list[Path]:
    """The run folder's complete checkpoints (`step-N`; a `.partial` one is not), by step."""
    found = [p for p in (out / "checkpoints").glob("step-*") if p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(out: Path) -> Path | None:
    """The run folder's checkpoint of the highest step, or None."""
    return next(reversed(checkpoints(out)), None)


def _run_entries(out: Path) -> list[Path]:
    """What a run writes in its folder: every entry but the hidden ones."""
    return [e for e in out.iterdir() if not e.name.startswith(".")] if out.is_dir() else []
