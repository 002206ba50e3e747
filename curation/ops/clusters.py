"""Duplicate clusters of prompts, shared by near_dedupe, semantic_dedupe and image_dedupe.

A signal holds edges between prompts (prompt_id, other_prompt_id, similarity) over all ingested pairs; deciding
keeps the edges between live prompts that meet the threshold, clusters them around survivors (star clustering)
and removes the members' pairs, writing the clusters to `dups/<op>.parquet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.ops.base import Decision
from curation.ops.context import BuildContext
from curation.sql import read_parquet, sql_literal

# What a cluster decision reads of `live_pairs`.
CLUSTER_READS = ("row_key", "pair_id", "prompt_id", "source", "source_row")


def write_edges(ctx: BuildContext, edges: list[tuple[str, str, float]], measure: str, signals: Path) -> None:
    """Write the signal of an edge-scoring op: `prompt_id, other_prompt_id, <measure>` (jaccard, cosine)."""
    table = pa.table(
        {
            "prompt_id": pa.array([e[0] for e in edges], pa.string()),
            "other_prompt_id": pa.array([e[1] for e in edges], pa.string()),
            measure: pa.array([e[2] for e in edges], pa.float64()),
        }
    )
    ctx.write_table(table, signals, "prompt_id, other_prompt_id")


def decide_edges(
    ctx: BuildContext, op: str, signals: Path, params: Any, *, measure: str, method: str, reason: str
) -> Decision:
    """The decision of an edge-scoring op: live edges with `measure` >= `params.threshold`, star-clustered (at
    most `params.max_cluster` members), the members removed."""
    edges = ctx.rows(live_edges(signals, f"{measure} >= {params.threshold}"))
    members = star_clusters(ctx, edges, params.max_cluster)
    return cluster_decision(op, members, method, reason, "prompt like", measure)


def live_edges(signals: Path, condition: str) -> str:
    """SQL: the signal's edges that meet `condition` between two live prompts (the signal covers every ingested
    prompt; earlier stages may have removed some)."""
    live = "(SELECT prompt_id FROM live_pairs)"
    return f"""SELECT * FROM {read_parquet(signals)}
               WHERE {condition} AND prompt_id IN {live} AND other_prompt_id IN {live}"""


def star_clusters(
    ctx: BuildContext, edges: list[tuple[str, str, float]], max_cluster: int
) -> list[tuple[str, str, float]]:
    """(member prompt_id, survivor prompt_id, similarity) for every removed member: in survivor order (the
    first-listed source, the earliest row) each unassigned prompt becomes a survivor and takes its unassigned
    neighbours, at most `max_cluster` members; a member is always directly similar to its survivor, so no chain
    of small edits grows a runaway cluster."""
    if not edges:
        return []
    neighbours: dict[str, list[tuple[str, float]]] = {}
    for a, b, similarity in edges:
        neighbours.setdefault(a, []).append((b, similarity))
        neighbours.setdefault(b, []).append((a, similarity))
    first_rows = ctx.db.sql("SELECT prompt_id, min(row_key) AS priority FROM live_pairs GROUP BY prompt_id")
    prompts = ctx.db.from_arrow(pa.table({"prompt_id": pa.array(list(neighbours), pa.string())}))
    order = [r[0] for r in prompts.join(first_rows, "prompt_id").order("priority").select("prompt_id").fetchall()]
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


def cluster_decision(
    op: str, members: list[tuple[str, str, float]], method: str, reason: str, like: str, measure: str
) -> Decision:
    """Remove the members' pairs (`reason`; the detail names the survivor: "<like> SOURCE ROW (<measure> x)") and
    write the clusters to `dups/<op>.parquet` with `method`."""
    table = pa.table(
        {
            "prompt_id": pa.array([m[0] for m in members], pa.string()),
            "survivor_prompt_id": pa.array([m[1] for m in members], pa.string()),
            "similarity": pa.array([m[2] for m in members], pa.float64()),
        }
    )
    survivors = """SELECT m.*, s.pair_id AS survivor_pair_id, s.source AS survivor_source, s.source_row AS survivor_row
                   FROM cluster_list m JOIN (SELECT DISTINCT ON (prompt_id) prompt_id, pair_id, source, source_row
                                            FROM live_pairs ORDER BY prompt_id, row_key) s
                     ON s.prompt_id = m.survivor_prompt_id"""
    return Decision(
        relations=[("cluster_list", table), ("cluster_members", survivors)],
        evidence={
            f"dups/{op}.parquet": f"""
                SELECT p.pair_id, p.source, p.source_row, c.survivor_pair_id, c.survivor_source, c.survivor_row,
                       {sql_literal(method)} AS method, c.similarity
                FROM live_pairs p JOIN cluster_members c ON p.prompt_id = c.prompt_id
                ORDER BY p.pair_id, p.source, p.source_row"""
        },
        removals=[
            f"""SELECT p.row_key, {sql_literal(reason)} AS reason,
                       {sql_literal(like + " ")} || c.survivor_source || ' ' || c.survivor_row
                         || ' ({measure} ' || round(c.similarity, 3) || ')' AS detail
                FROM live_pairs p JOIN cluster_members c ON p.prompt_id = c.prompt_id"""
        ],
    )
