"""Reviewing in the workbench: the queues, the form, and where reviews are written (only under the data root)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.reviews import read_reviews
from tests.app.conftest import run_page, shown


@pytest.fixture
def root(data_root: Path, tmp_path: Path) -> Path:
    """A data root of its own with the demo build (reviews are written there)."""
    shutil.copytree(data_root / "demo", tmp_path / "demo")
    return tmp_path


def test_a_review_is_written_to_the_data_root_only(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in (root / "demo").rglob("*")}
    app = run_page("pages/7_Review.py", root, monkeypatch)
    # each queue says how many of its pairs a review can change: the duplicates are all removed already (the
    # exact copy of a pair is not listed: it is that pair)
    assert app.selectbox[1].options == [
        "contamination matches (6 of 10 pairs in the shards)",
        "duplicate clusters (0 of 2 pairs in the shards)",
        "random sample (36 of 36 pairs in the shards)",
    ]
    assert app.selectbox[1].value == "contamination matches"
    assert any(c.value.startswith("10 pairs in this queue, 6 of them in the shards") for c in app.caption)
    # why each is listed, as the listing stage's own decision (a review may overrule it)
    assert all(why.startswith("decontaminate ") for why in app.dataframe[0].value["listed because"])
    assert any("0 of the 10 shown reviewed (saved here, or applied by this build)" in c.value for c in app.caption)
    pair = next(t.value for t in app.text if " · pair " in t.value)
    assert app.button[-1].disabled  # no reviewer named yet
    assert "Give your name as the reviewer to save a review." in [c.value for c in app.caption]
    app.text_input(key="reviewer").input("ana").run()
    app.radio[0].set_value("swap")
    app.text_input(key="review-note").input("[b]labels reversed[/b]\u202erev")
    app.button[-1].click().run()  # Save review
    assert not app.exception, app.exception
    assert any(s.value == "Review saved." for s in app.success)
    # at once, without another run: the queue counts it
    assert any("1 of the 10 shown reviewed (saved here, or applied by this build)" in c.value for c in app.caption)
    # coming back to the pair, the decision starts at its latest review (saving again repeats it), the note empty
    again = run_page("pages/7_Review.py", root, monkeypatch)
    assert (again.radio[0].value, again.text_input(key="review-note").value) == ("swap", "")
    [review] = read_reviews(root / "reviews" / "demo.parquet").to_pylist()
    assert (review["action"], review["note"], review["reviewer"], review["queue"]) == (
        "swap",
        "[b]labels reversed[/b]\u202erev",
        "ana",
        "contamination matches",
    )
    assert review["pair_id"] in pair and review["build"] == "demo"
    assert {p: p.stat().st_mtime_ns for p in (root / "demo").rglob("*")} == before  # the build stays read-only
    app.run()
    assert any("1 of the 10 shown reviewed (saved here, or applied by this build)" in c.value for c in app.caption)
    # a note's right-to-left override reversed the line's own words after it: spelled out
    [line] = [t.value for t in app.text if t.value.startswith("reviewed: swap by ana at ")]
    assert "[b]labels reversed[/b]\\u202erev (the next build reading the file applies it)" in line


def test_reviews_are_not_written_through_a_symlink(root: Path, tmp_path_factory: pytest.TempPathFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (root / "reviews").symlink_to(elsewhere)
    app = run_page("pages/7_Review.py", root, monkeypatch)
    assert any("Reviews cannot be kept for this build." in w.value for w in app.warning)
    assert not list(elsewhere.iterdir())


def test_reviews_are_not_written_into_a_build_or_beside_a_planted_link(
    root: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link inside the data root is refused too: `reviews/demo.parquet` leading into a build's shards would have
    a review written there, and a planted lock or temporary link would have a file written outside the root."""
    from app.data import AppError, review_file
    from curation.errors import InputError
    from curation.reviews import Review, append_review

    (root / "reviews").mkdir()
    into = root / "demo" / "shards" / "new.arrow"
    (root / "reviews" / "demo.parquet").symlink_to(into)
    with pytest.raises(AppError, match="reviews/demo.parquet: a link"):
        review_file(root, "demo")
    app = run_page("pages/7_Review.py", root, monkeypatch)
    assert any("Reviews cannot be kept for this build." in w.value for w in app.warning)
    review = Review("ab" * 32, "s", "f:0", "keep", "", "me", "demo")
    with pytest.raises(InputError, match="a link; reviews are written to a plain file only"):
        append_review(root / "reviews" / "demo.parquet", review)
    assert not into.exists()
    (root / "reviews" / "demo.parquet").unlink()
    (root / "reviews" / "demo.parquet.lock").unlink()
    outside = tmp_path_factory.mktemp("outside") / "created"
    (root / "reviews" / "demo.parquet.lock").symlink_to(outside)
    with pytest.raises(InputError, match="cannot open the reviews' lock"):
        append_review(root / "reviews" / "demo.parquet", review)
    assert not outside.exists() and not (root / "reviews" / "demo.parquet").exists()


def test_the_next_build_applies_a_review_made_in_the_workbench(
    root: Path, demo_recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curation.build import build
    from curation.recipe import load_recipe

    app = run_page("pages/7_Review.py", root, monkeypatch)
    app.selectbox[1].set_value("random sample").run()
    pair = next(t.value for t in app.text if " · pair " in t.value)
    app.text_input(key="reviewer").input("ana").run()
    app.radio[0].set_value("drop")
    app.button[-1].click().run()
    assert any(s.value == "Review saved." for s in app.success)
    # and a swap of another pair, made as the page makes it
    from app.data import Build
    from curation.reviews import Review, append_review

    other = next(p for p in Build(root, "demo").pairs(sources=["ultrafeedback"])[0] if p["pair_id"] not in pair)
    swap = Review(other["pair_id"], "ultrafeedback", other["source_row"], "swap", "", "ana", "demo", "random sample")
    append_review(root / "reviews" / "demo.parquet", swap)
    # The shipped recipe as it is: its reviews path, like its sources', is relative to its own folder.
    shipped = (Path(__file__).resolve().parents[2] / "mixes" / "demo-reviewed.yaml").read_text()
    recipe = demo_recipe.with_name("demo-reviewed.yaml")
    recipe.write_text(shipped)
    (demo_recipe.parent.parent / "builds" / "reviews").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "reviews" / "demo.parquet", demo_recipe.parent.parent / "builds" / "reviews" / "demo.parquet")
    manifest = build(load_recipe(recipe), root / "demo-reviewed")
    dropped = {s: e["removed"].get("human_review", {}) for s, e in manifest["sources"].items()}
    assert sum(n for reasons in dropped.values() for n in reasons.values()) >= 1
    rejects = pq.read_table(root / "demo-reviewed" / "rejects" / "rejects.parquet").to_pylist()
    [dropped_row] = [r for r in rejects if r["stage"] == "human_review"][:1]
    assert dropped_row["pair_id"] in pair and dropped_row["detail"].startswith("by ana at ")
    # The swapped pair has a new id; the Pairs page finds it by its old one and says it was swapped.
    app = run_page("pages/2_Pairs.py", root, monkeypatch, build="demo-reviewed")
    app.text_input[0].input(other["pair_id"][:8]).run()
    assert any(c.value.startswith("1 row of the shards matches ") for c in app.caption)
    header = next(t.value for t in app.text if " · pair " in t.value)
    assert header.endswith(f"chosen and rejected swapped in this build (pair id before: {other['pair_id']})")
    # The reviewed build's Review page: the reviews it applied are marked, and new ones are said to go to its own
    # file, which its recipe does not read yet.
    app = run_page("pages/7_Review.py", root, monkeypatch, build="demo-reviewed")
    app.selectbox[1].set_value("random sample").run()
    said = " ".join(c.value for c in app.caption).replace("\\", "")
    # every file by its absolute path, as `curate reviews` prints the recipe line (the recipe's own spelling is
    # relative to a folder the page does not know)
    taken = demo_recipe.parent.parent / "builds" / "reviews" / "demo.parquet"
    assert f'This build applied 2 of the 2 reviews it took (from "{taken.resolve()}"); reviews saved here' in said
    assert (
        f'human_review: {{reviews: ["{taken.resolve()}", "{(root / "reviews").resolve()}/demo-reviewed.parquet"]}}'
        in said
    )
    assert "reviews/demo-reviewed.parquet" in said
    marks = set(app.dataframe[0].value["reviewed"])
    # the review and the pair's fate first, then why the queue lists it (a stage's decision a review may overrule)
    assert list(app.dataframe[0].value.columns)[:3] == ["reviewed", "in_shards", "listed because"]
    widths = {k: v.get("width") for k, v in json.loads(app.dataframe[0].proto.columns).items()}
    assert widths["reviewed"] == "medium"  # "swap, applied" is not cut to "swap, appl"
    assert "swap, applied" in marks or "drop, applied" in marks, marks


def test_the_rm_margin_queue_says_why_each_pair_is_listed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    from app.data import Build

    flags = pa.table({"source": ["rlaif_v", "rlaif_v"], "source_row": ["a.jsonl:1", "a.jsonl:2"],
                      "pair_id": ["p1", "p2"], "margin": [-2.0, -1.5],
                      "detail": ["left as is: its mirror rlaif_v a.jsonl:2 is reversed too; margin -2.0 < -1.0",
                                 None]})  # fmt: skip
    (root / "demo" / "flags").mkdir()
    pq.write_table(flags, root / "demo" / "flags" / "rm_margin.parquet")
    build = Build(root, "demo")
    assert "rm_margin flags" in build.review_queues()
    assert [(r["pair_id"], r["why"]) for r in build.review_queue("rm_margin flags")] == [
        ("p1", "left as is: its mirror rlaif_v a.jsonl:2 is reversed too; margin -2.0 < -1.0"),
        ("p2", "margin -1.5"),
    ]
    assert build.review_queue_counts("rm_margin flags") == (2, 0)  # neither pair is in the shards
    assert not any(r["in_shards"] for r in build.review_queue("rm_margin flags"))
    opened = run_page("pages/7_Review.py", root, monkeypatch)  # opens on a queue a review can change
    assert opened.selectbox[1].value == "contamination matches"
    pq.write_table(flags.drop_columns("detail"), root / "demo" / "flags" / "rm_margin.parquet")  # an older build's
    assert [r["why"] for r in Build(root, "demo").review_queue("rm_margin flags")] == ["margin -2.0", "margin -1.5"]
    pq.write_table(flags.slice(0, 0), root / "demo" / "flags" / "rm_margin.parquet")  # `swap` listing nothing
    assert "rm_margin flags" not in Build(root, "demo").review_queues()


def test_a_removed_copy_of_a_kept_pair_says_its_review_changes_the_kept_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review is of a pair: reviewing a removed exact duplicate reviews its surviving copy in the shards too."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    row = {"prompt": "Tell me about zebras.", "chosen": "Striped horses.", "rejected": "Purple."}
    write_jsonl(tmp_path / "uf.jsonl", [row, row, {"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    (tmp_path / "r.yaml").write_text("name: d\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n")
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "root" / "d")
    app = run_page("pages/3_Removed.py", tmp_path / "root", monkeypatch)
    app.selectbox[1].set_value(("exact_dedupe", "exact duplicate")).run()
    assert not app.exception, app.exception
    captions = [shown(c.value) for c in app.caption]
    assert (
        "This row was removed at exact_dedupe, but its pair is in the shards through other rows (1): a review is "
        "of the pair, so it changes those in the next build." in captions
    ), captions


def test_a_build_named_reviews_is_never_written_into(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`reviews/` is where the workbench keeps reviews: a build there is not offered, nor written into; a pipe
    planted as the reviews' lock is refused instead of blocking the page."""
    import os

    from app.data import AppError, list_builds, review_file
    from curation.errors import InputError
    from curation.reviews import Review, append_review

    shutil.copytree(root / "demo", root / "reviews")
    assert [b.name for b in list_builds(root)] == ["demo"]
    with pytest.raises(AppError, match="reviews: a build's folder; reviews are never written into a build"):
        review_file(root, "demo")
    shutil.rmtree(root / "reviews")
    (root / "reviews").mkdir()
    os.mkfifo(root / "reviews" / "demo.parquet.lock")
    with pytest.raises(InputError, match="demo.parquet.lock: (cannot open the reviews' lock|the reviews' lock is not)"):
        append_review(root / "reviews" / "demo.parquet", Review("ab" * 32, "s", "f:0", "keep", "", "me", "demo"))


def test_a_pair_swapped_by_a_review_is_reviewed_as_shown_and_the_next_build_applies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a build where a review swapped a pair, its queues count it in the shards under the id other stages
    recorded, and a review of it, made as shown, is recorded of the pair its source gives (keep and swap
    exchanged): the next build, reading both builds' reviews, applies it."""
    from app.data import Build
    from curation.build import build
    from curation.recipe import load_recipe
    from curation.reviews import Review, append_review
    from curation.shards import id_before_swap
    from tests.conftest import write_jsonl

    rows = [{"prompt": f"Question {k}?", "chosen": f"Answer {k}.", "rejected": f"No {k}."} for k in range(3)]
    write_jsonl(tmp_path / "uf.jsonl", rows)
    root = tmp_path / "root"
    recipe = "name: d\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl, weight: 2}\n"  # 2 copies
    (tmp_path / "d.yaml").write_text(recipe)
    build(load_recipe(tmp_path / "d.yaml"), root / "d")
    first = Build(root, "d").pairs()[0][0]
    swap = Review(first["pair_id"], "uf", first["source_row"], "swap", "", "ana", "d", "random sample")
    append_review(root / "reviews" / "d.parquet", swap)
    (tmp_path / "d2.yaml").write_text(recipe + "ops:\n  human_review: {reviews: root/reviews/d.parquet}\n")
    build(load_recipe(tmp_path / "d2.yaml"), root / "d2")

    swapped = Build(root, "d2")
    pair = swapped.pair(first["pair_id"])  # found by the id it had before the swap
    assert pair is not None and pair["pair_id"] != first["pair_id"]
    assert id_before_swap(pair["meta"]) == first["pair_id"] and pair["chosen"].startswith("No ")
    queue = swapped.review_queue("random sample")
    assert len(queue) == 3 and swapped.review_queue_counts("random sample") == (3, 3)  # each pair once, copies or not
    at = next(k for k, r in enumerate(queue) if r["swapped"])
    assert (queue[at]["reviewed_as"], queue[at]["in_shards"]) == (first["pair_id"], True)
    assert queue[at]["pair_id"] == pair["pair_id"]  # the id the pair view shows, not the one before the swap

    for action in ("keep", "drop"):  # keep as shown, then drop
        app = run_page("pages/7_Review.py", root, monkeypatch, build="d2")
        app.selectbox[1].set_value("random sample").run()
        app.session_state["review-at"] = at
        app.run()
        assert any(f"recorded of the pair as its source gives it ({first['pair_id']})" in shown(c.value)
                   for c in app.caption)  # fmt: skip
        app.text_input(key="reviewer").input("bo").run()
        app.radio[0].set_value(action)
        app.button[-1].click().run()
        assert not app.exception, app.exception
        recorded = {"keep": "swap", "drop": "drop"}[action]
        assert any(t.value.startswith(f"{action} (recorded as {recorded} of {first['pair_id']})") for t in app.text)
        review = read_reviews(root / "reviews" / "d2.parquet").to_pylist()[-1]
        assert (review["pair_id"], review["action"]) == (first["pair_id"], recorded)
        listed = next(r for r in app.dataframe[0].value.to_dict("records") if r["pair_id"] == queue[at]["pair_id"])
        assert (listed["reviewed"], listed["in_shards"]) == (f"{action}, pending", "yes, chosen and rejected swapped")

    both = "[root/reviews/d.parquet, root/reviews/d2.parquet]"
    (tmp_path / "d3.yaml").write_text(recipe + f"ops:\n  human_review: {{reviews: {both}}}\n")
    manifest = build(load_recipe(tmp_path / "d3.yaml"), root / "d3")
    assert manifest["sources"]["uf"]["removed"]["human_review"] == {"dropped by review": 1}
    flags = pq.read_table(root / "d3" / "flags" / "human_review.parquet").to_pylist()
    assert {(f["pair_id"], f["action"], f["outcome"]) for f in flags} == {(first["pair_id"], "drop", "applied")}

    # d2 built again reading its own file too, where the pair's last review keeps it as its source gives it: d2's
    # page marks that review applied, and names no file twice
    append_review(root / "reviews" / "d2.parquet", Review(first["pair_id"], "uf", first["source_row"], "keep", "",
                                                          "bo", "d2", "random sample"))  # fmt: skip
    (tmp_path / "d2.yaml").write_text(recipe + f"ops:\n  human_review: {{reviews: {both}}}\n")
    build(load_recipe(tmp_path / "d2.yaml"), root / "d2", replace=True)
    app = run_page("pages/7_Review.py", root, monkeypatch, build="d2")
    app.selectbox[1].set_value("random sample").run()
    said = " ".join(shown(c.value) for c in app.caption)
    assert "reviews/d2.parquet, which its recipe reads: building it again applies them." in said, said
    assert said.count("d2.parquet") == 2, said  # the recipe's list, then where reviews saved here go
    listed = next(r for r in app.dataframe[0].value.to_dict("records") if r["pair_id"] == first["pair_id"])
    assert (listed["reviewed"], listed["in_shards"]) == ("keep, applied", "yes")
    app.session_state["review-at"] = app.dataframe[0].value.to_dict("records").index(listed)
    app.run()
    assert any(t.value.startswith("reviewed: keep by bo at ") and t.value.endswith("(in this build: applied)")
               for t in app.text), [t.value for t in app.text]  # fmt: skip
    # the same action saved again since, with a note: that review is not the one this build took
    append_review(root / "reviews" / "d2.parquet", Review(first["pair_id"], "uf", first["source_row"], "keep",
                                                          "checked twice", "bo", "d2", "random sample"))  # fmt: skip
    app.run()
    listed = next(r for r in app.dataframe[0].value.to_dict("records") if r["pair_id"] == first["pair_id"])
    assert listed["reviewed"] == "keep, pending"  # saved here, not yet applied
    assert any(t.value.endswith(": checked twice (the next build reading the file applies it)") for t in app.text)
    # a build that did not record the files it read (older manifests): its recipe's file names tell
    from app.data import AppliedReviews

    old = AppliedReviews({}, ["root/reviews/d.parquet", "root/reviews/d2.parquet"], [])
    assert old.reads(root / "reviews" / "d2.parquet") and not old.reads(root / "reviews" / "d3.parquet")


def test_a_queue_longer_than_its_list_says_so_in_the_stepper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review table lists the first 200 of a queue: its stepper counts in the whole queue."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    rows = [{"prompt": f"Question {k}?", "chosen": f"Answer {k}.", "rejected": f"No {k}."} for k in range(205)]
    write_jsonl(tmp_path / "uf.jsonl", rows)
    (tmp_path / "r.yaml").write_text("name: r\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n")
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "root" / "r")
    app = run_page("pages/7_Review.py", tmp_path / "root", monkeypatch)
    assert app.selectbox[1].value == "random sample"
    captions = [c.value for c in app.caption]
    assert "1 of 205" in captions and any(c.startswith("205 pairs in this queue") for c in captions)
    app.session_state["review-at"] = 199
    app.run()
    assert "200 of 205 (only the first 200 are listed)" in [c.value for c in app.caption]


def test_a_survivor_a_review_swapped_is_said_to_be_in_the_shards_swapped(
    root: Path, demo_recipe: Path, tmp_path: Path
) -> None:
    """The Removed page sets each duplicate beside its survivor: one a review swapped is found by its new id."""
    import yaml

    from app.data import Build
    from curation.build import build
    from curation.recipe import load_recipe
    from curation.reviews import Review, append_review

    demo = Build(root, "demo")
    near = next(d for d in demo.duplicates() if d["method"] == "minhash-jaccard")
    assert near["survivor_fate"] == "in the shards"
    where = [near["survivor_source"], near["survivor_row"]]
    [found] = demo.rows("SELECT DISTINCT pair_id FROM pairs WHERE source = ? AND source_row = ?", where)
    survivor = found["pair_id"]
    reviews = tmp_path / "reviews.parquet"
    append_review(reviews, Review(survivor, near["survivor_source"], near["survivor_row"], "swap", "", "ana", "demo"))
    recipe = yaml.safe_load(demo_recipe.read_text())
    recipe["ops"] = {**(recipe.get("ops") or {}), "human_review": {"reviews": str(reviews)}}
    path = demo_recipe.parent / "swapped-survivor.yaml"  # beside demo.yaml: its relative paths still resolve
    path.write_text(yaml.safe_dump(recipe))
    build(load_recipe(path), root / "swapped")
    fates = {d["survivor_row"]: d["survivor_fate"] for d in Build(root, "swapped").duplicates()}
    assert fates[near["survivor_row"]] == "in the shards, chosen and rejected swapped"


def test_a_damaged_record_of_applied_reviews_is_said_not_a_traceback(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    flags = root / "demo" / "flags" / "human_review.parquet"
    flags.parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({"pair_id": ["x"]}), flags)  # a parquet table, but not the stage's
    whole = flags.read_bytes()
    for damage, said in ((lambda: None, "not the table the human_review stage writes (no column action, note, "
                                        "outcome, reviewed_at, reviewer)"),
                         (lambda: flags.write_bytes(whole[: len(whole) // 2]), "damaged, not read")):  # fmt: skip
        damage()
        app = run_page("pages/7_Review.py", root, monkeypatch)
        assert any(w.value == "The reviews this build applied cannot be read." for w in app.warning), said
        assert any(f"demo/flags/human_review.parquet: {said}" in t.value for t in app.text), said


def test_what_a_build_did_with_a_review_saved_on_its_page(tmp_path: Path) -> None:
    """The review the build took: its outcome; an older one it passed over for a newer review of another file:
    superseded; one saved since, or in a file the build did not read: None (the next build applies it)."""
    from app.data import AppliedReviews

    own = tmp_path / "reviews" / "b.parquet"
    taken = {"pair_id": "p", "action": "swap", "note": "", "reviewer": "ana",
             "reviewed_at": "2026-01-02T00:00:00+00:00", "outcome": "applied"}  # fmt: skip
    record = AppliedReviews({"p": taken}, ["a.parquet", "b.parquet"], [str(tmp_path / "a.parquet"), str(own)])
    mine = {**taken, "action": "drop", "reviewer": "bo"}
    review = {k: v for k, v in taken.items() if k != "outcome"}
    assert record.outcome(review, own, [review]) == "applied"
    older = {**mine, "reviewed_at": "2026-01-01T00:00:00+00:00"}
    assert record.outcome(older, own, [older]) == "superseded by a newer review (swap by ana)"  # from another file
    newer = {**mine, "reviewed_at": "2026-01-03T00:00:00+00:00"}
    assert record.outcome(newer, own, [newer]) is None  # saved since: pending
    same_second = {**mine, "reviewed_at": taken["reviewed_at"]}  # written after the taken one, in the same second
    assert record.outcome(same_second, own, [review, same_second]) is None  # in a file the last written applies
    assert record.outcome(review, tmp_path / "reviews" / "c.parquet", [review]) is None  # a file not read


def test_a_queue_lists_its_rows_in_the_order_their_files_give_them(data_root: Path) -> None:
    """`file:10` after `file:8`, not before `file:2` as text would sort them; pairs in the shards first."""
    from app.data import Build

    queue = Build(data_root, "demo").review_queue("contamination matches")
    for in_shards in (True, False):
        rows = [int(r["source_row"].rsplit(":", 1)[1]) for r in queue if r["in_shards"] == in_shards]
        assert len(rows) > 2 and rows == sorted(rows), rows


def test_a_listed_pair_a_review_swapped_is_shown_by_its_new_id(root: Path, demo_recipe: Path, tmp_path: Path) -> None:
    """The contamination queue records a pair's id before human_review swaps it: the queue's row gave that old id
    while the pair view under it gave the new one."""
    from app.data import Build
    from curation.build import build
    from curation.recipe import load_recipe
    from curation.reviews import Review, append_review

    listed = next(r for r in Build(root, "demo").review_queue("contamination matches") if r["in_shards"])
    swap = Review(listed["pair_id"], listed["source"], listed["source_row"], "swap", "", "ana", "demo",
                  "contamination matches")  # fmt: skip
    reviews = tmp_path / "reviews.parquet"
    append_review(reviews, swap)
    import yaml

    data = yaml.safe_load(demo_recipe.read_text())
    data["ops"] = {**(data.get("ops") or {}), "human_review": {"reviews": str(reviews)}}
    recipe = demo_recipe.with_name("swapped.yaml")  # beside the demo recipe: its relative paths hold
    recipe.write_text(yaml.safe_dump(data))
    build(load_recipe(recipe), root / "swapped")
    swapped = Build(root, "swapped")
    new_id = swapped.pair(listed["pair_id"])["pair_id"]  # found by its id before the swap
    assert new_id != listed["pair_id"]
    [row] = [r for r in swapped.review_queue("contamination matches") if r["source_row"] == listed["source_row"]]
    assert (row["pair_id"], row["reviewed_as"], row["swapped"]) == (new_id, listed["pair_id"], True)
