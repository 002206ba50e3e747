"""near_dedupe: near-duplicate prompts by MinHash-LSH, verified by exact Jaccard, clustered around survivors.

Score: for every distinct live prompt (text + images), word n-gram shingles and a MinHash signature; LSH
bands tuned to `candidate_threshold` propose candidate pairs, which are kept with their exact Jaccard when it
reaches `candidate_threshold`. Prompts with different images are never candidates (the same question about
another picture is another prompt). Decide: star clustering with `threshold`: in survivor order (first-listed
source, earliest row) each unassigned prompt becomes a survivor and takes its unassigned neighbours, at most
`max_cluster` members; a member is removed only if it is directly similar to its survivor, so no chain of
small edits grows a runaway cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from curation.ops.base import BuildContext, Op
from curation.shingles import MAX_NGRAM, Words, band_keys, jaccard, lsh_params, minhash, shingle_words, word_hashes
from curation.sql import sql_literal

# A prompt's text for matching: all turns, without the image placeholders (images are compared on their own).
PROMPT_TEXT = "array_to_string(list_transform(prompt, lambda m: replace(m.content, '<image>', '')), chr(10))"
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


def prompt_units(ctx: BuildContext, relation: str = "live_pairs") -> pl.DataFrame:
    """Distinct prompts of `relation` (the live pairs; `pairs` for all ingested ones, which the costly ops score):
    prompt_id, text (all turns), images key, priority (first row_key)."""
    table = ctx.db.sql(
        f"""SELECT prompt_id, min({PROMPT_TEXT}) AS text,
                  min(array_to_string(images, ',')) AS images, min(row_key) AS priority
           FROM {relation} GROUP BY prompt_id ORDER BY priority"""
    ).to_arrow_table()
    return pl.from_arrow(table)  # type: ignore[return-value]


def unit_words(ctx: BuildContext, units: pl.DataFrame) -> Words:
    """The words of each unit's text. Tokenizing is much of near_dedupe's and decontaminate's work, and a
    prompt's words follow from its prompt_id (identity normalizes more than tokenizing does), so a later stage
    takes an earlier stage's words (`ctx.memo`) when it has them all."""
    cached = ctx.memo.get("unit_words")
    if cached is not None:
        known = pl.DataFrame({"prompt_id": cached[0], "index": np.arange(len(cached[0]))})
        index = units.select("prompt_id").join(known, on="prompt_id", how="left", maintain_order="left")["index"]
        if index.null_count() == 0:
            return cached[1].take(index.to_numpy())
    words = word_hashes(units["text"].to_list(), threads=ctx.workers)
    ctx.memo["unit_words"] = (units["prompt_id"], words)
    return words


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


class NearDedupe(Op):
    name = "near_dedupe"
    signal_keys: ClassVar[dict[str, str]] = {"prompt_id": "prompt", "other_prompt_id": "prompt"}
    Params = NearDedupeParams
    thresholds = frozenset({"threshold", "max_cluster"})

    def input_fingerprint(self, ctx: BuildContext) -> str | None:
        return ctx.fingerprint("prompts")

    def score(self, ctx: BuildContext, params: NearDedupeParams, signals: Path) -> None:
        units = prompt_units(ctx, "pairs")
        images = units["images"].to_list()
        shingles = shingle_words(unit_words(ctx, units), params.ngram)
        signatures = minhash(shingles, params.num_perm)
        bands, rows = lsh_params(params.candidate_threshold, params.num_perm)
        pairs = candidate_pairs(band_keys(signatures, bands, rows, _salt(images)))
        edges = []
        for i, j in pairs:
            if images[i] != images[j]:
                continue
            similarity = jaccard(shingles.of(i), shingles.of(j))
            if similarity >= params.candidate_threshold:
                edges.append((units["prompt_id"][int(i)], units["prompt_id"][int(j)], similarity))
        table = pa.table(
            {
                "prompt_id": pa.array([e[0] for e in edges], pa.string()),
                "other_prompt_id": pa.array([e[1] for e in edges], pa.string()),
                "jaccard": pa.array([e[2] for e in edges], pa.float64()),
            }
        )
        ctx.db.register("near_edges", table)
        ctx.copy("SELECT * FROM near_edges ORDER BY prompt_id, other_prompt_id", signals)
        ctx.db.unregister("near_edges")

    def decide(self, ctx: BuildContext, params: NearDedupeParams, signals: Path) -> list[str]:
        edges = ctx.rows(live_edges(signals, f"jaccard >= {params.threshold}"))
        clusters = star_clusters(ctx, edges, params.max_cluster)
        write_clusters(ctx, clusters, "near_dedupe", "minhash-jaccard")
        return [
            """SELECT p.row_key, 'near-duplicate prompt' AS reason,
                      'prompt like ' || c.survivor_source || ' ' || c.survivor_row
                        || ' (jaccard ' || round(c.similarity, 3) || ')' AS detail
               FROM live_pairs p JOIN cluster_members c ON p.prompt_id = c.prompt_id"""
        ]


def live_edges(signals: Path, condition: str) -> str:
    """SQL: the signal's edges that meet `condition` between two live prompts (the signal covers every ingested
    prompt; earlier stages may have removed some)."""
    live = "(SELECT prompt_id FROM live_pairs)"
    return f"""SELECT * FROM read_parquet({sql_literal(signals)})
               WHERE {condition} AND prompt_id IN {live} AND other_prompt_id IN {live}"""


def star_clusters(
    ctx: BuildContext, edges: list[tuple[str, str, float]], max_cluster: int
) -> list[tuple[str, str, float]]:
    """(member prompt_id, survivor prompt_id, similarity) for every removed member."""
    if not edges:
        return []
    neighbours: dict[str, list[tuple[str, float]]] = {}
    for a, b, similarity in edges:
        neighbours.setdefault(a, []).append((b, similarity))
        neighbours.setdefault(b, []).append((a, similarity))
    ctx.db.register("edge_prompts", pa.table({"prompt_id": list(neighbours)}))
    order = [
        r[0]
        for r in ctx.rows(
            """SELECT e.prompt_id FROM edge_prompts e JOIN live_pairs p USING (prompt_id)
               GROUP BY e.prompt_id ORDER BY min(p.row_key)"""
        )
    ]
    ctx.db.unregister("edge_prompts")
    rank = {prompt: i for i, prompt in enumerate(order)}
    assigned: set[str] = set()
    members = []
    for center in order:
        if center in assigned:
            continue
        assigned.add(center)
        size = 1
        for other, similarity in sorted(neighbours[center], key=lambda x: rank[x[0]]):
            if other in assigned or size >= max_cluster:
                continue
            assigned.add(other)
            members.append((other, center, similarity))
            size += 1
    return members


def write_clusters(ctx: BuildContext, members: list[tuple[str, str, float]], name: str, method: str) -> None:
    """Register `cluster_members` (prompt_id, survivor row, similarity) and write the `dups/` evidence table."""
    ctx.db.register(
        "member_list",
        pa.table(
            {
                "prompt_id": pa.array([m[0] for m in members], pa.string()),
                "survivor_prompt_id": pa.array([m[1] for m in members], pa.string()),
                "similarity": pa.array([m[2] for m in members], pa.float64()),
            }
        ),
    )
    ctx.db.execute(
        """CREATE OR REPLACE TEMP TABLE cluster_members AS
           SELECT m.*, s.pair_id AS survivor_pair_id, s.source AS survivor_source, s.source_row AS survivor_row
           FROM member_list m JOIN (SELECT DISTINCT ON (prompt_id) * FROM live_pairs ORDER BY prompt_id, row_key) s
             ON s.prompt_id = m.survivor_prompt_id"""
    )
    ctx.db.unregister("member_list")
    ctx.copy(
        f"""SELECT p.pair_id, p.source, p.source_row, c.survivor_pair_id, c.survivor_source, c.survivor_row,
                   {sql_literal(method)} AS method, c.similarity
            FROM live_pairs p JOIN cluster_members c ON p.prompt_id = c.prompt_id
            ORDER BY p.pair_id, p.source, p.source_row""",
        ctx.root / "dups" / f"{name}.parquet",
    )
