"""The op contract: declared reads, pure decisions, the runner's checks, and `curate ops`."""

import json
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest
from typer.testing import CliRunner

from curation.build_dir import BENCHMARK_IMAGES, CONTAMINATION
from curation.cli import app
from curation.ops import OPS, Decision, Op
from curation.ops.context import BASE_RELATIONS, context_for_rows
from curation.ops.runner import apply_decision
from curation.schema import IMAGE_SCHEMA, PAIR_SCHEMA
from tests.curation.ops.conftest import run_op_on_rows

COLUMNS = {
    "pairs": {"row_key", *PAIR_SCHEMA.names},
    "live_pairs": {"row_key", *PAIR_SCHEMA.names},
    "images": set(IMAGE_SCHEMA.names),
}
SHARED = {"text_stats", "prompt_units", "prompt_words", "phashes"}


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_declares_what_it_reads_and_writes(name: str) -> None:
    op = OPS[name]
    assert op.reads and set(op.reads) <= set(BASE_RELATIONS)
    for relation, columns in op.reads.items():
        assert set(columns) <= COLUMNS[relation], f"{name} declares unknown {relation} columns"
    assert set(op.uses) <= SHARED
    assert set(op.signal_keys.values()) <= {"pair", "prompt", "image"}
    # Where the build folder's readers (`BuildDir`) look for evidence.
    allowed = {CONTAMINATION, BENCHMARK_IMAGES, f"dups/{name}.parquet", f"flags/{name}.parquet",
               f"flags/{name}_estimate.parquet"}  # fmt: skip
    assert set(op.evidence) <= allowed


class _ReadsChosen(Op):
    name = "reads_chosen"
    Params = dict
    reads: ClassVar[dict[str, tuple[str, ...]]] = {"live_pairs": ("row_key",)}

    def decide(self, ctx, params, signals) -> Decision:  # type: ignore[no-untyped-def]
        return Decision(removals=["SELECT row_key, 'long' AS reason, '' AS detail FROM live_pairs WHERE chosen > ''"])


def test_an_op_sees_only_the_columns_it_declares(tmp_path: Path) -> None:
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b"}]
    op = _ReadsChosen()
    ctx = context_for_rows(tmp_path, rows, reads=op.reads)
    with pytest.raises(duckdb.BinderException, match="chosen"):
        apply_decision(ctx, op, op.decide(ctx, {}, tmp_path))
    full = context_for_rows(tmp_path, rows)  # without `reads`, the relations are whole
    assert apply_decision(full, op, op.decide(full, {}, tmp_path)) == ([("s", "long", 1)], [], [])


def test_the_runner_writes_only_declared_evidence(tmp_path: Path) -> None:
    ctx = context_for_rows(tmp_path, [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    decision = Decision(evidence={"dups/other.parquet": "SELECT 1 AS x"})
    with pytest.raises(AssertionError, match="does not declare: dups/other.parquet"):
        apply_decision(ctx, OPS["exact_dedupe"], decision)
    assert not (tmp_path / "dups").exists()


def test_the_relations_a_decision_makes_are_dropped_after_it(tmp_path: Path) -> None:
    base = "one two three four five six seven eight nine ten"
    rows = [{"prompt": text, "chosen": "a", "rejected": "b"} for text in (base, base + " eleven")]
    run = run_op_on_rows(tmp_path, "near_dedupe", rows, {"threshold": 0.7, "candidate_threshold": 0.6})
    assert list(run.removed()) == [1]
    assert [name for name, _ in run.decision.relations] == ["cluster_list", "cluster_members"]
    tables = {t for (t,) in run.ctx.rows("SELECT table_name FROM duckdb_tables()")}
    assert not tables & {"cluster_list", "cluster_members"}


def test_curate_ops_lists_every_contract() -> None:
    result = CliRunner().invoke(app, ["ops", "--json"])
    assert result.exit_code == 0, result.output
    described = {op["name"]: op for op in json.loads(result.output)}
    assert list(described) == list(OPS)
    assert described["decontaminate"]["evidence"] == [CONTAMINATION, BENCHMARK_IMAGES]
    assert described["near_dedupe"]["cached_across_builds"] and not described["filters"]["cached_across_builds"]
    assert described["image_dedupe"]["signal_keys"] == {"sha256": "image"}
    assert described["filters"]["parameters"]["drop_ties"] == {"default": True, "threshold": True}
