"""Run one op: score (or reuse stored signals), decide, then carry the decision out."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.io import atomic_file, read_json_state, readable_parquet, sha256_file, write_json, write_text
from curation.ops.base import Decision, GuardStop, Op
from curation.ops.context import BuildContext


@dataclass
class OpRun:
    reused: bool = False  # the signals came from the build cache
    resumed: bool = False  # the signals were written by the interrupted build this one resumes
    removed: list[tuple[str, str, int]] = field(default_factory=list)  # (source, reason, rows)
    warnings: list[str] = field(default_factory=list)  # the decision's, for the manifest


def run_op(ctx: BuildContext, op: Op, params: Any) -> OpRun:
    signals = op.signal_path(ctx, params)
    digests = ctx.root / "work" / SIGNAL_DIGESTS
    result = OpRun()
    if _unchanged(signals, digests):
        result.resumed = True
    else:  # absent, or damaged by a crash of the machine or in place: scored again
        kept = op.cache_path(ctx, params)
        digest = _cached(kept) if kept is not None else None
        if kept is not None and digest is not None:
            copy_file(kept, signals)
            result.reused = True
        else:
            op.score(ctx, params, signals)
            digest = sha256_file(signals)  # once: the cache's copy and the resume's record share it
            if kept is not None:
                copy_file(signals, kept)
                write_text(_digest_file(kept), digest + "\n")
        _record(signals, digests, digest)
    decision = op.decide(ctx, params, signals)
    # Swapped and flagged pairs are counted at the build's end, among the pairs still kept then
    result.removed, _, _ = apply_decision(ctx, op, decision)
    result.warnings = decision.warnings
    return result


# The sha256 of each signal table the build wrote, beside its other work files: a resumed build reuses a table
# only while its bytes are the ones written (a file damaged in place keeps its size and its parquet footer).
SIGNAL_DIGESTS = "signal_sha256.json"


def _unchanged(signals: Path, digests: Path) -> bool:
    recorded = read_json_state(digests)
    return (
        readable_parquet(signals) and isinstance(recorded, dict) and recorded.get(signals.name) == sha256_file(signals)
    )


def _digest_file(kept: Path) -> Path:
    """Beside each cached signal table, the sha256 it was written with (per file: builds share a cache)."""
    return kept.with_name(kept.name + ".sha256")


def _cached(kept: Path) -> str | None:
    """The sha256 of a cached signal table whose bytes are those it was kept with, or None."""
    try:
        recorded = _digest_file(kept).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None  # absent (a cache from before digests were kept): computed again, and kept with one
    return recorded if readable_parquet(kept) and recorded == sha256_file(kept) else None


def _record(signals: Path, digests: Path, digest: str) -> None:
    recorded = read_json_state(digests)
    digests.parent.mkdir(parents=True, exist_ok=True)
    write_json(digests, {**(recorded if isinstance(recorded, dict) else {}), signals.name: digest}, durable=False)


Counts = list[tuple[str, str, int]]  # (source, reason, rows)


def apply_decision(ctx: BuildContext, op: Op, decision: Decision) -> tuple[Counts, Counts, Counts]:
    """Make the decision's relations, write its evidence, apply its removals in order, its swaps and unswaps, count
    its flags, then its guard (the evidence stays in the build folder when the guard stops the build). Returns what was
    removed, swapped and flagged."""
    undeclared = sorted(set(decision.evidence) - set(op.evidence))
    if undeclared:
        raise AssertionError(f"{op.name} writes evidence it does not declare: {', '.join(undeclared)}")
    before = ctx.live_counts() if decision.max_removal_rate is not None else {}
    for name, relation in decision.relations:
        ctx.create_relation(name, relation)
    try:
        for relative, query in decision.evidence.items():
            ctx.copy(query, ctx.root / relative)
        removed = [count for query in decision.removals for count in ctx.remove(op.name, query)]
        swapped = [count for query in decision.swaps for count in ctx.swap(op.name, query)]
        for query in decision.unswaps:  # counted where they show: the earlier stage's swaps, fewer
            ctx.unswap(query)
        flagged = [count for query in decision.flags for count in ctx.flag(op.name, query)]
    finally:
        for name, _ in decision.relations:
            ctx.drop_relation(name)
    if decision.max_removal_rate is not None:
        _guard(ctx, op, decision, before, removed, swapped)
    return removed, swapped, flagged


def _guard(
    ctx: BuildContext, op: Op, decision: Decision, before: dict[str, int], removed: Counts, swapped: Counts
) -> None:
    changed: dict[str, int] = {}
    for source, _, n in [*removed, *swapped]:
        changed[source] = changed.get(source, 0) + n
    rate = decision.max_removal_rate
    over = [(s, changed[s], before[s]) for s in sorted(changed) if rate is not None and changed[s] / before[s] > rate]
    if over:
        verb = "have swapped" if swapped and not removed else "lose or have swapped" if swapped else "lose"
        worst = "; ".join(f"{s} would {verb} {r} of {n} pairs ({100 * r / n:.1f}%)" for s, r, n in over)
        files = ", ".join(str(ctx.root / relative) for relative in decision.evidence)
        files = files or f"its signal, {ctx.root / 'signals' / op.name}-v{op.version}-*.parquet"
        raise GuardStop(
            f"{op.name} stopped the build: {worst}, above max_removal_rate {rate}; the evidence is in {files}; to act "
            f"anyway, raise {op.name}'s max_removal_rate in the recipe (1.0: no guard)"
        )


def copy_file(source: Path, target: Path) -> None:
    """Copy under a temporary name, then rename: a reader never finds half a file (durable: the cache outlives the
    build)."""
    with source.open("rb") as original, atomic_file(target) as copy:
        shutil.copyfileobj(original, copy, 1 << 20)
