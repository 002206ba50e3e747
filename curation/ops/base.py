"""What an op is: it scores (writes a signal table keyed by pair, prompt or image), then decides (returns a
`Decision`: the rows to remove, the evidence tables to write, a guard). Deciding has no side effects: the runner
(`curation.ops.runner`) writes the files, applies the removals and the guard.

Signals are stored under `signals/<op>-v<version>-<hash>.parquet`, where the hash covers only the parameters
that change the signals (`Op.scoring`), never the thresholds. A build resumed with `--resume` reuses the signal
files it already wrote. The costly ops (near, semantic and image dedupe, decontamination) score all ingested
pairs, not only the live ones, so their signals do not depend on earlier decisions: they are also kept in a
cache folder across builds, by op, version, scoring parameters and the fingerprint of their input
(`Op.cache_path`), and a build whose change is a threshold, a cheaper stage or the mix reuses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from curation.errors import InputError
from curation.ops.context import BuildContext

FILE = {"path": True}  # `field(metadata=FILE)`: a local file the op reads, resolved against the recipe's folder
# `field(metadata=MODEL)`: a model's Hub name or its local folder; a folder resolves against the recipe's folder.
MODEL = {"model": True}


def file_fields(params: Any) -> list[str]:
    """The names of an op's parameters (its `Params` class or an instance) that are local files."""
    return [spec.name for spec in dataclasses.fields(params) if spec.metadata.get("path")]


def model_fields(params: Any) -> list[str]:
    """The names of an op's parameters that name a model (a Hub name or a local folder)."""
    return [spec.name for spec in dataclasses.fields(params) if spec.metadata.get("model")]


def files_of(params: Any) -> list[str]:
    """The local files an op's parameters name, in field order (a list field gives each of its files)."""
    values = [getattr(params, name) for name in file_fields(params)]
    return [path for value in values for path in (value if isinstance(value, tuple) else [value]) if path]


class GuardStop(InputError):
    """An op's decision would remove more of a source than the recipe allows: the build stops."""


@dataclass
class Decision:
    """What `Op.decide` returns; the runner carries it out in this order."""

    # Temporary tables the queries below read, made in order (a query may read an earlier one); dropped after.
    relations: list[tuple[str, str | pa.Table]] = field(default_factory=list)
    # Build-folder path (one the op declares in `Op.evidence`) -> a query whose rows are written there.
    evidence: dict[str, str] = field(default_factory=dict)
    # Queries selecting `row_key, reason, detail` among `live_pairs`, applied in order: a later one sees the
    # removals of an earlier one.
    removals: list[str] = field(default_factory=list)
    # Queries selecting `row_key, reason, detail` among `live_pairs`: pairs kept with chosen and rejected exchanged
    # in the shards (a label fix), after the removals.
    swaps: list[str] = field(default_factory=list)
    # Queries selecting `row_key, reason, detail` among `live_pairs`: pairs an earlier stage swapped, put back the
    # way their source gives them (a person's `keep` over a model's swap), after the swaps.
    unswaps: list[str] = field(default_factory=list)
    # Queries selecting `row_key, reason, detail` among `live_pairs`: pairs kept as they are and listed for a person
    # to look at (in the op's evidence); counted per source and reason in the manifest's `flagged`.
    flags: list[str] = field(default_factory=list)
    # The guard: the build stops when the removals and swaps change more than this share of a source's live pairs.
    max_removal_rate: float | None = None
    # What the user should know about this decision (its evidence is weak, say): the manifest's `warnings`.
    warnings: list[str] = field(default_factory=list)


class Op:
    name: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type]
    default_on: ClassVar[bool] = False  # runs with default parameters when the recipe does not name it
    thresholds: ClassVar[frozenset[str]] = frozenset()  # parameters that only decide
    # The relations (`pairs`, `live_pairs`, `images`) and their columns that score and decide read; an op's unit
    # tests give it only these (`context_for_rows`).
    reads: ClassVar[dict[str, tuple[str, ...]]]
    # The shared work of the context it uses: "text_stats", "prompt_units", "prompt_words", "phashes"
    # (`curation.perceptual.cached_phashes`).
    uses: ClassVar[tuple[str, ...]] = ()
    # The columns a signal row is keyed by and what each names ("pair", "prompt" or "image"): readers find a
    # pair's signals by them (`curation.lookup`).
    signal_keys: ClassVar[dict[str, str]] = {"pair_id": "pair"}
    evidence: ClassVar[tuple[str, ...]] = ()  # the build-folder files a decision may write

    def scoring(self, params: Any) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(params).items() if k not in self.thresholds}

    def signal_path(self, ctx: BuildContext, params: Any) -> Path:
        digest = hashlib.sha256(json.dumps(self.scoring(params), sort_keys=True).encode()).hexdigest()[:12]
        return ctx.root / "signals" / f"{self.name}-v{self.version}-{digest}.parquet"

    def input_fingerprint(self, ctx: BuildContext) -> str | None:
        """What `score` reads besides its parameters, as `ctx.fingerprint`s: an op whose signals are computed over
        all ingested pairs (never only the live ones, which earlier decisions change) says so here, and its
        signals are kept across builds. None (the default): cheap ops, recomputed by every build."""
        return None

    def cache_path(self, ctx: BuildContext, params: Any) -> Path | None:
        """Where the signals of these parameters over this input are kept across builds (None: not kept)."""
        fingerprint = self.input_fingerprint(ctx)
        if ctx.cache is None or fingerprint is None:
            return None
        key = json.dumps([self.scoring(params), fingerprint], sort_keys=True).encode()
        return ctx.cache / f"{self.name}-v{self.version}-{hashlib.sha256(key).hexdigest()[:16]}.parquet"

    def score(self, ctx: BuildContext, params: Any, signals: Path) -> None:
        """Measure, and write the signal table to `signals` (its only output)."""
        raise NotImplementedError

    def decide(self, ctx: BuildContext, params: Any, signals: Path) -> Decision:
        """From the signals and the thresholds, what to remove and what evidence to write; reads only."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The op's contract, as `curate ops` prints it."""
        return {
            "name": self.name,
            "version": self.version,
            "default_on": self.default_on,
            "reads": {relation: list(columns) for relation, columns in self.reads.items()},
            "uses": list(self.uses),
            "signal": f"signals/{self.name}-v{self.version}-<hash>.parquet",
            "signal_keys": self.signal_keys,
            "evidence": list(self.evidence),
            "parameters": {
                f.name: {"default": f.default, "threshold": f.name in self.thresholds}
                for f in dataclasses.fields(self.Params)
            },
            "cached_across_builds": type(self).input_fingerprint is not Op.input_fingerprint,
        }
