"""near_dedupe: near-duplicate prompts by MinHash-LSH, verified by exact Jaccard, clustered around survivors.

Score: for every distinct prompt of the ingested pairs (text + images), word n-gram shingles and a MinHash
signature; LSH bands tuned to `candidate_threshold` propose candidate pairs, which are kept with their exact
Jaccard when it reaches `candidate_threshold`. Prompts with different images are never candidates (the same
question about another picture is another prompt). Decide: the edges between live prompts at or above
`threshold`, star-clustered around survivors (`curation.ops.clusters`, at most `max_cluster` members).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from curation.ops.base import Decision, Op
from curation.ops.clusters import CLUSTER_READS, decide_edges, write_edges
from curation.ops.context import BuildContext
from curation.shingles import MAX_NGRAM, Shingles, band_keys, jaccard, lsh_params, minhash, shingle_words, word_hashes

MAX_BUCKET_PAIRS = 32  # a bucket pairs each member with at most this many earlier members


@dataclass(frozen=True)
class NearDedupeParams:
    threshold: float = 0.8  # exact Jaccard at or above which a prompt is a near duplicate
    ngram: int = 3
    num_perm: int = 128
    candidate_threshold: float = 0.6  # LSH tuning and the lowest Jaccard stored as a signal
    max_cluster: int = 1000

    def check(self) -> None:
        if not 0 < self.candidate_threshold <= self.threshold <= 1:
            raise ValueError("need 0 < candidate_threshold <= threshold <= 1 (signals hold only pairs above the first)")
        if not 1 <= self.ngram <= MAX_NGRAM or self.num_perm < 2 or self.max_cluster < 2:
            raise ValueError(f"need 1 <= ngram <= {MAX_NGRAM}, num_perm >= 2 and max_cluster >= 2")


def _salt(keys: list[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys],
        dtype=np.uint64,
    )


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """(i, j) unit index pairs, i < j, that share a bucket in some band (band by band, so memory stays small)."""
    found = []
    for band in range(keys.shape[1]):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")  # within a bucket, members stay in unit order
        ordered = column[order]
        same = ordered[1:] == ordered[:-1]
        if not same.any():
            continue
        # Only rows in buckets of two or more matter: keep them with their bucket number.
        in_bucket = np.zeros(len(ordered), dtype=bool)
        in_bucket[1:] |= same
        in_bucket[:-1] |= same
        rows = np.flatnonzero(in_bucket)
        bucket = np.cumsum(np.concatenate([[True], ordered[1:] != ordered[:-1]]))[rows]
        members = order[rows]
        # Every member pairs with its bucket's first (earliest) member, so a big bucket still forms one star...
        first = np.concatenate([[True], bucket[1:] != bucket[:-1]])
        head = members[np.maximum.accumulate(np.where(first, np.arange(len(members)), 0))]
        found.append(np.stack([head[~first], members[~first]], axis=1))
        # ...and with at most MAX_BUCKET_PAIRS earlier members.
        for offset in range(1, MAX_BUCKET_PAIRS + 1):
            if offset >= len(members):
                break
            hit = bucket[offset:] == bucket[:-offset]
            if not hit.any():
                break
            found.append(np.stack([members[:-offset][hit], members[offset:][hit]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def signature_keys(shingles: Shingles, images: list[str], params: NearDedupeParams) -> np.ndarray:
    """Each text's LSH bucket keys (texts, bands): MinHash over its shingles, banded, salted by its images."""
    bands, rows = lsh_params(params.candidate_threshold, params.num_perm)
    return band_keys(minhash(shingles, params.num_perm), bands, rows, _salt(images))


def verify(shingles: Shingles, images: list[str], pairs: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """The candidate pairs (i, j) with the same images whose exact Jaccard reaches `threshold`, with it."""
    edges = []
    for i, j in pairs.tolist():
        if images[i] != images[j]:
            continue
        similarity = jaccard(shingles.of(i), shingles.of(j))
        if similarity >= threshold:
            edges.append((i, j, similarity))
    return edges


# Texts per task on a cluster, and candidate pairs per verifying task.
TASK_TEXTS = 100_000
TASK_PAIRS = 200_000


def _keys_task(texts: list[str], images: list[str], params: NearDedupeParams) -> np.ndarray:
    return signature_keys(shingle_words(word_hashes(texts), params.ngram), images, params)


def _verify_task(
    texts: list[str], images: list[str], pairs: np.ndarray, params: NearDedupeParams
) -> list[tuple[int, int, float]]:
    """`verify` over the texts of the pairs' units only (`pairs` index `texts`)."""
    return verify(shingle_words(word_hashes(texts), params.ngram), images, pairs, params.candidate_threshold)


def _score_in_tasks(
    ctx: BuildContext, texts: pl.Series, images: list[str], params: NearDedupeParams
) -> list[tuple[int, int, float]]:
    """The same edges as in one process: signatures in tasks of `TASK_TEXTS` texts, the candidate search (a sort
    per band of the bucket keys) here, the verification in tasks of `TASK_PAIRS` pairs, each given the texts of
    its pairs' units only."""
    with ctx.engine.pool(ctx.workers) as pool:
        chunks = [pool.submit(_keys_task, texts.slice(start, TASK_TEXTS).to_list(),
                              images[start : start + TASK_TEXTS], params)
                  for start in range(0, len(texts), TASK_TEXTS)]  # fmt: skip
        pairs = candidate_pairs(np.concatenate([c.result() for c in chunks]) if chunks else np.zeros((0, 1)))
        tasks = []
        for start in range(0, len(pairs), TASK_PAIRS):
            part = pairs[start : start + TASK_PAIRS]
            units, local = np.unique(part, return_inverse=True)
            unit_texts = texts.gather(units).to_list()
            tasks.append((units, pool.submit(_verify_task, unit_texts, [images[u] for u in units.tolist()],
                                             local.reshape(part.shape), params)))  # fmt: skip
        return [(int(units[i]), int(units[j]), similarity) for units, task in tasks
                for i, j, similarity in task.result()]  # fmt: skip


class NearDedupe(Op):
    name = "near_dedupe"
    # v2: prompts without a word (`???`, emoji alone) are no one's near-duplicates; v3: words after NFKC, without
    # format characters (`tokenize`)
    version = 3
    Params = NearDedupeParams
    reads: ClassVar[dict[str, tuple[str, ...]]] = {"live_pairs": CLUSTER_READS}
    uses = ("prompt_units", "prompt_words")
    signal_keys: ClassVar[dict[str, str]] = {"prompt_id": "prompt", "other_prompt_id": "prompt"}
    evidence: ClassVar[tuple[str, ...]] = ("dups/near_dedupe.parquet",)
    thresholds = frozenset({"threshold", "max_cluster"})

    def input_fingerprint(self, ctx: BuildContext) -> str | None:
        return ctx.fingerprint("prompts")

    def score(self, ctx: BuildContext, params: NearDedupeParams, signals: Path) -> None:
        units = ctx.prompt_units(live=False)
        images = units["images"].to_list()
        if ctx.engine.distributed:
            edges = _score_in_tasks(ctx, units["text"], images, params)
        else:
            shingles = shingle_words(ctx.prompt_words(units), params.ngram)
            pairs = candidate_pairs(signature_keys(shingles, images, params))
            edges = verify(shingles, images, pairs, params.candidate_threshold)
        ids = units["prompt_id"]
        write_edges(ctx, [(ids[i], ids[j], similarity) for i, j, similarity in edges], "jaccard", signals)

    def decide(self, ctx: BuildContext, params: NearDedupeParams, signals: Path) -> Decision:
        return decide_edges(
            ctx, self.name, signals, params, measure="jaccard", method="minhash-jaccard", reason="near-duplicate prompt"
        )
