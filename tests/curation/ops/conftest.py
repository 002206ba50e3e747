"""`build_rows`: build a tiny recipe from inline native rows, returning the manifest and the build folder;
`run_op_on_rows`: one op on inline canonical rows, through the context an op's unit tests use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from curation.build import build
from curation.ops import OPS, BuildContext, Decision
from curation.ops.context import context_for_rows
from curation.ops.runner import apply_decision
from curation.recipe import load_recipe
from tests.conftest import write_jsonl


class Built:
    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root, self.manifest = root, manifest

    def table(self, relative: str) -> list[dict[str, Any]]:
        return pq.read_table(self.root / relative).to_pylist()

    def removed(self, stage: str) -> list[dict[str, Any]]:
        return [r for r in self.table("rejects/rejects.parquet") if r["stage"] == stage]


BuildRows = Callable[..., Built]


@pytest.fixture
def build_rows(tmp_path: Path) -> BuildRows:
    counter = iter(range(1000))

    def run(
        sources: dict[str, tuple[str, list[dict[str, Any]]]],
        ops: dict[str, Any] | None = None,
        benchmarks: dict[str, tuple[str, list[dict[str, Any]]]] | None = None,
        images_root: Path | None = None,
        **options: Any,  # for `build`
    ) -> Built:
        n = next(counter)
        recipe: dict[str, Any] = {"name": f"t{n}", "seed": 0, "sources": {}, "ops": ops or {}}
        for section, entries in (("sources", sources), ("benchmarks", benchmarks or {})):
            recipe.setdefault(section, {})
            for name, (adapter, rows) in entries.items():
                path = write_jsonl(tmp_path / f"in{n}" / section / f"{name}.jsonl", rows)
                recipe[section][name] = {"adapter": adapter, "path": str(path)}
                if images_root is not None:
                    recipe[section][name]["images_root"] = str(images_root)
        recipe_path = tmp_path / f"recipe{n}.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))
        out = tmp_path / f"build{n}"
        return Built(out, build(load_recipe(recipe_path), out, **options))

    return run


def uf(prompt: str, chosen: str = "yes", rejected: str = "no") -> dict[str, Any]:
    """A row in the flattened ultrafeedback_binarized layout."""
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "metadata": {"score_chosen": 8, "score_rejected": 2},
    }


class OpRun:
    """An op run on inline rows through `context_for_rows`: its signal table, its decision, what it removed and
    the evidence it wrote."""

    def __init__(
        self, ctx: BuildContext, signals: Path, decision: Decision, flagged: list[tuple[str, str, int]]
    ) -> None:
        self.ctx, self.decision = ctx, decision
        self.signals = pq.read_table(signals).to_pylist()
        self.flagged = flagged  # (source, reason, pairs) of the pairs the decision flagged

    def removed(self) -> dict[int, tuple[str, str]]:
        """row number -> (reason, detail)."""
        rows = self.ctx.rows("SELECT source_row, reason, detail FROM removed")
        return {int(row.rsplit(":", 1)[1]): (reason, detail) for row, reason, detail in rows}

    def evidence(self, relative: str) -> list[dict[str, Any]]:
        return pq.read_table(self.ctx.root / relative).to_pylist()


def _state(ctx: BuildContext) -> tuple[Any, ...]:
    """What deciding must not change: the files under the build folder, the database's tables and the live rows."""
    files = sorted(str(p.relative_to(ctx.root)) for p in ctx.root.rglob("*"))
    tables = ctx.rows("SELECT table_name, estimated_size FROM duckdb_tables() ORDER BY 1")
    views = ctx.rows("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1")
    return files, tables, views, ctx.rows("SELECT count(*) FROM live")


def run_op_on_rows(
    root: Path,
    name: str,
    rows: list[dict[str, Any]],
    params: dict[str, Any] | None = None,
    removed_before: tuple[int, ...] = (),
    **context: Any,
) -> OpRun:
    """Score `rows` with op `name`, decide (checking that deciding has no side effects), apply the decision. The
    op sees only the columns it declares (`Op.reads`); the rows numbered in `removed_before` are removed first, as
    an earlier stage would."""
    op = OPS[name]
    parsed = op.Params(**(params or {}))
    ctx = context_for_rows(root, rows, reads=op.reads, **context)
    if removed_before:
        keys = ", ".join(str(k) for k in removed_before)
        ctx.remove("earlier", f"SELECT row_key, 'earlier' AS reason, '' AS detail FROM live WHERE row_key IN ({keys})")
    signals = op.signal_path(ctx, parsed)
    op.score(ctx, parsed, signals)
    before = _state(ctx)
    decision = op.decide(ctx, parsed, signals)
    assert _state(ctx) == before, f"{name}.decide changed the build"
    _, _, flagged = apply_decision(ctx, op, decision)
    return OpRun(ctx, signals, decision, flagged)
