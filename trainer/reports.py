"""Evaluation reports: one JSON file per `trainer eval`, never overwritten, and what reads them back.

`trainer eval --model RUN` writes `RUN/evals/<UTC time>-<benchmarks>.json`, e.g.
`evals/20250101T120000Z-vl_rewardbench+rewardbench.json`: written under a temporary name, then linked to its
final name, which fails where that name exists, so a report is complete or absent and never replaces another (a
second one in the same second is `...-2.json`). Runs evaluated before per-report files have one `RUN/eval.json`,
read as their oldest report.

A report (`"version": 2`) holds `created` (UTC, `2025-01-01T12:00:00Z`), `models` (the model folders, several
for an ensemble), `settings` (`max_length`, `micro_batch`) and `benchmarks`, by name:
- `location`, `commit` (for a Hub id, the commit read: its default branch resolved once before reading; null for
  a local file, or offline), `images_root`, `options` (VL-RewardBench `grouping`, RewardBench `xstest_weights`):
  what was read;
- `rows_read`; `items_total`: every item of the benchmark (the pairs read plus the rows rejected at ingest);
  `items_scored`; `not_scored`: {reason: items}, for rows rejected at ingest, items whose image was not found and
  items the model could not score (`longer than max_length`, ...) alike; `groups`: {group: {items_total,
  items_scored}} over the items read (a row rejected at ingest has no known group);
- `scores_over_scored` (the scored items only) and `scores_over_all` (every item, the unscored counted as wrong;
  a row rejected at ingest enters the whole-benchmark accuracy only): {metric: percent}; MM-RLHF-RewardBench's
  `acc_plus` is over prompt ids (the items' `key`), not items (`prompts_text` counts them); a benchmark-wide average
  over groups (VL-RewardBench `macro`, RewardBench `overall`) is left out where the items do not cover every group;
- `length_judge`: the same two for the judge that prefers the longer answer, on the model's terms: over the items
  the model scored, and over every item with those the model did not score counted as wrong;
- `items`: per pair read, `pair_id`, `source_row`, `group`, `key`, `not_scored` (its reason, or null),
  `reward_chosen`, `reward_rejected`, `correct`, `tie`, `length_judge_correct` (the judge's own verdict; its
  scores over all count an item the model did not score as wrong).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from curation.build_dir import is_count
from curation.errors import InputError
from curation.words import quantity

EVALS = "evals"  # RUN/evals/: one report per evaluation
LEGACY_REPORT = "eval.json"  # the one report of a run evaluated before per-report files
VERSION = 2
_NAME = re.compile(r"(?P<stem>.*?)(?:-(?P<copy>\d+))?\.json")


def write_report(folder: Path, report: dict[str, Any]) -> Path:
    """`folder/<UTC time>-<benchmarks>.json` (`-2`, `-3`, ... where that name is taken); the path written."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = report["created"].replace("-", "").replace(":", "") + "-" + "+".join(report["benchmarks"])
    tmp = folder / f".{stem}.{os.getpid()}.partial"  # hidden and not *.json: never listed as a report
    with tmp.open("x", encoding="utf-8") as file:
        file.write(json.dumps(report, indent=1, sort_keys=True) + "\n")
    path, copy = folder / f"{stem}.json", 1
    try:
        while True:
            try:
                os.link(tmp, path)  # unlike a rename, refuses an existing name
                return path
            except FileExistsError:
                copy += 1
                path = folder / f"{stem}-{copy}.json"
    finally:
        tmp.unlink()


def _order(name: str) -> tuple[str, int]:
    match = _NAME.fullmatch(name)
    return (match["stem"], int(match["copy"] or 1)) if match else (name, 0)


def report_names(run: Path, leave_out: Collection[str] = ()) -> list[str]:
    """A run's reports as paths relative to it, oldest first: `eval.json`, then `evals/*.json` by time. `leave_out`
    names either that a reader refused: it is not looked at."""
    names = [LEGACY_REPORT] if LEGACY_REPORT not in leave_out and (run / LEGACY_REPORT).is_file() else []
    if EVALS not in leave_out and (run / EVALS).is_dir():
        files = sorted((p.name for p in (run / EVALS).glob("*.json")), key=_order)
        names += [f"{EVALS}/{name}" for name in files]
    return names


def read_reports(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name relative to the run, report) for every report of a run, oldest first."""
    reports = []
    for name in report_names(run):
        try:
            report = json.loads((run / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise InputError(f"{run / name}: cannot read this evaluation report ({exc})") from None
        if (problem := report_problem(report)) is not None:
            raise InputError(f"{run / name}: {problem}")
        reports.append((name, report))
    return reports


def latest_by_benchmark(reports: list[tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """For each benchmark, the newest (name, report) that evaluated it."""
    latest = {}
    for name, report in reports:
        for benchmark in report.get("benchmarks", {}):
            latest[benchmark] = (name, report)
    return dict(sorted(latest.items()))


def _scores_problem(scores: Any, where: str) -> str | None:
    if not isinstance(scores, dict) or not all(
        (isinstance(v, (int, float)) and not isinstance(v, bool)) or v is None for v in scores.values()
    ):
        return f"`{where}` is not a mapping of metric to percent"
    return None


def entry_problem(entry: Any) -> str | None:
    """What of a benchmark's entry in a report is not as `trainer eval` writes it (the module's docstring), or None:
    what every reader (the eval table, the model card, the workbench's Runs page) relies on, checked once where a
    report is read rather than found wanting half-way through a table."""
    if not isinstance(entry, dict):
        return f"{type(entry).__name__}, not an object"
    if not counted(entry):  # a legacy eval.json's entry: its scores alone
        return _scores_problem(entry, "scores")
    for key in ("items_total", "items_scored"):
        if not is_count(entry.get(key)):
            return f"`{key}` is not a count"
    if entry["items_scored"] > entry["items_total"]:
        return "`items_scored` is more than `items_total`"
    not_scored = entry.get("not_scored")
    if not isinstance(not_scored, dict) or not all(is_count(n) for n in not_scored.values()):
        return "`not_scored` is not a mapping of reason to items"
    judge = entry.get("length_judge")
    for scores, where in ((entry, ""), (judge if isinstance(judge, dict) else {}, "length_judge.")):
        for key in ("scores_over_scored", "scores_over_all"):
            if (problem := _scores_problem(scores.get(key), where + key)) is not None:
                return problem
    groups = entry.get("groups") or {}
    if not isinstance(groups, dict) or not all(
        isinstance(g, dict) and is_count(g.get("items_total")) and is_count(g.get("items_scored"))
        for g in groups.values()
    ):
        return "`groups` is not a mapping of group to its items_total and items_scored"
    items = entry.get("items", [])
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("key", 0), (str, type(None))) and isinstance(
            i.get("not_scored", 0), (str, type(None))) for i in items
    ):  # fmt: skip
        return "`items` is not a list of items, each with its `key` and `not_scored` (a text or null)"
    return None


def report_problem(report: Any) -> str | None:
    """What of a report is not as `trainer eval` writes it (an object with its benchmarks, each entry as
    `entry_problem` reads it), or None."""
    if not isinstance(report, dict) or not isinstance(report.get("benchmarks", {}), dict):
        return "not a report (a JSON object with its benchmarks)"
    for benchmark, entry in report.get("benchmarks", {}).items():
        if (problem := entry_problem(entry)) is not None:
            return f"its entry for {benchmark!r} is not as `trainer eval` writes it ({problem})"
    judge = report.get("length_judge", {})  # a legacy eval.json's judge scores, beside its benchmarks
    if not isinstance(judge, dict) or not all(_scores_problem(s, "length_judge") is None for s in judge.values()):
        return "its `length_judge` is not a mapping of benchmark to scores"
    return None


def counted(entry: dict[str, Any]) -> bool:
    """A benchmark entry with item counts (version 2); a legacy `eval.json` holds the scores alone."""
    return "scores_over_scored" in entry


def not_scored_text(entry: dict[str, Any]) -> str:
    """`4 of 44 not scored (image not found: 4)`, or "" where every item was scored."""
    missing = entry["items_total"] - entry["items_scored"]
    if not missing:
        return ""
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(entry["not_scored"].items(), key=lambda r: -r[1]))
    return f"{missing} of {entry['items_total']} not scored ({reasons})"


def groups_text(entry: dict[str, Any]) -> str:
    """The items behind each group's column (`by group: general 2 of 3, hallucination 3`: scored, of read where
    some were not; rows rejected at ingest said apart, being in no group), or "" for a benchmark whose columns are
    not its groups (RewardBench's sections)."""
    columns = entry["scores_over_all"].keys()
    parts = [f"{g} {c['items_scored']}" + ("" if c["items_scored"] == c["items_total"] else f" of {c['items_total']}")
             for g, c in (entry.get("groups") or {}).items() if g in columns]  # fmt: skip
    if not parts:
        return ""
    unread = entry["items_total"] - sum(c["items_total"] for c in entry["groups"].values())
    apart = f" ({quantity(unread, 'row')} rejected at ingest, in no group: in the whole-benchmark score alone)"
    return f"by group: {', '.join(parts)}" + (apart if unread else "")


def prompts_text(entry: dict[str, Any]) -> str:
    """The prompts MM-RLHF-RewardBench's `acc_plus` is over (from the items' prompt ids, `key`): `acc_plus over 46
    prompts, ...` or `acc_plus over 45 of 46 prompts ...` where some had no scored pair; "" for other benchmarks."""
    items = entry.get("items", [])
    if "acc_plus" not in entry["scores_over_all"] or not items:
        return ""
    read = {item["key"] for item in items}
    scored = {item["key"] for item in items if item["not_scored"] is None}
    rule = "a prompt right when all its pairs are"
    if len(scored) == len(read):
        text = f"acc_plus over {len(read)} prompts ({rule})"
    else:  # over the scored items, the prompts with a scored pair; over all, every prompt, an unscored pair wrong
        text = (f"acc_plus over {len(scored)} of {len(read)} prompts (those with a scored pair; over all items, all "
                f"{len(read)}, an unscored pair counted wrong; {rule})")  # fmt: skip
    unread = entry["items_total"] - len(items)
    return text + (f"; the {unread} rows rejected at ingest have no known prompt (in acc alone)" if unread else "")


def counts_text(benchmark: str, entry: dict[str, Any]) -> str:
    """`all 44 items scored; by group: ...` or `40 of 44 items scored; 4 of 44 not scored (image not found: 4);
    by group: ...`, why a benchmark-wide average is missing, and the prompts a per-prompt score is over."""
    from trainer.benchmarks import average_left_out

    if not counted(entry):
        return "item counts not recorded (a report from before they were)"
    scored = (
        f"all {entry['items_total']} items scored"
        if entry["items_scored"] == entry["items_total"]
        else f"{entry['items_scored']} of {entry['items_total']} items scored; {not_scored_text(entry)}"
    )
    repeated = entry.get("items_repeated") or 0  # a report from before they were counted: none said
    repeats = (f"{quantity(repeated, 'item')} the same as an earlier one (prompt, images and answers), each counted "
               "as the benchmark's rows are") if repeated else None  # fmt: skip
    notes = [groups_text(entry), average_left_out(benchmark, entry["scores_over_all"]), prompts_text(entry), repeats]
    return "; ".join([scored, *(n for n in notes if n)])


def cell(value: Any) -> str:
    """A table cell: numbers to two places, an interval as `low-high`, nothing as `-`."""
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return "-".join(cell(v) for v in value)
    return f"{value:.2f}" if isinstance(value, float) else str(value)
