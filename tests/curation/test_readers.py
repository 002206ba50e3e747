import bz2
import gzip
import json
import lzma
import random
import signal
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import InputError
from curation.readers import is_hub_id, iter_local, iter_location, list_files
from tests.conftest import RunIngest


def _lines(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def test_jsonl_bad_lines_become_record_errors(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_lines([{"a": 1}]) + b"{not json\n" + b'{"a": "\xff\xfe"}\n' + b"[1, 2]\n\n" + _lines([{"a": 2}]))
    records = list(iter_local(path))
    assert [r.ref for r in records] == ["rows.jsonl:0", "rows.jsonl:1", "rows.jsonl:2", "rows.jsonl:3", "rows.jsonl:5"]
    assert [r.error.reason if r.error else None for r in records] == [
        None,
        "malformed json",
        "invalid utf-8",
        "not a json object",
        None,
    ]
    assert "rows.jsonl:2" in records[2].error.detail
    assert records[4].data == {"a": 2}


def _zstd_frames(data: bytes) -> bytes:
    """`data` as two zstd frames, as a file written in two goes holds them."""
    import zstandard

    half = len(data) // 2
    return zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])


# bz2 with 100 kB blocks: a cut file keeps the blocks before the cut
COMPRESS = {".gz": gzip.compress, ".bz2": lambda d: bz2.compress(d, 1), ".xz": lzma.compress, ".zst": _zstd_frames}


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".json.gz", ".jsonl.bz2", ".jsonl.xz", ".jsonl.zst", ".json.zst"])
def test_compressed_json_lines_are_read_as_datasets_reads_them(tmp_path: Path, suffix: str) -> None:
    rows = [{"i": i, "text": f"row {i} " + "é" * (i % 7)} for i in range(3000)]
    path = tmp_path / f"rows{suffix}"
    path.write_bytes(COMPRESS[path.suffix](_lines(rows)))
    records = list(iter_local(path))
    assert [r.data for r in records] == rows and [r.ref for r in records][-1] == f"rows{suffix}:2999"
    assert list_files(tmp_path) == [path]  # a folder lists it


@pytest.mark.parametrize("compression", [".gz", ".bz2", ".xz", ".zst"])
def test_streams_one_after_another_are_read_and_bytes_after_the_last_are_a_reject(
    tmp_path: Path, compression: str
) -> None:
    first, second = [{"a": i} for i in range(10)], [{"b": i} for i in range(3)]
    compress = COMPRESS[compression]
    two = tmp_path / f"two.jsonl{compression}"
    two.write_bytes(compress(_lines(first)) + compress(_lines(second)))
    assert [r.data for r in iter_local(two)] == first + second
    tail = tmp_path / f"tail.jsonl{compression}"  # rows appended uncompressed: not dropped unseen
    tail.write_bytes(compress(_lines(first)) + _lines(second))
    records = list(iter_local(tail))
    assert [r.data for r in records[:-1]] == first
    assert records[-1].ref == f"tail.jsonl{compression}:10+" and records[-1].error.reason == "truncated file"


@pytest.mark.parametrize("suffix", [".json.gz", ".json.bz2", ".json.xz", ".json.zst"])
def test_a_compressed_json_array_or_object_is_read_as_the_plain_one(tmp_path: Path, suffix: str) -> None:
    rows = [{"i": i, "text": f"row {i}"} for i in range(300)]
    array = json.dumps(rows, indent=2).encode()
    compress = COMPRESS["." + suffix.rsplit(".", 1)[-1]]
    (tmp_path / f"array{suffix}").write_bytes(compress(array))
    assert [r.data for r in iter_local(tmp_path / f"array{suffix}")] == rows
    (tmp_path / f"one{suffix}").write_bytes(compress(json.dumps(rows[0], indent=2).encode()))
    assert [r.data for r in iter_local(tmp_path / f"one{suffix}")] == rows[:1]
    cut = tmp_path / f"cut{suffix}"  # cut short: the elements before the cut, then one reject for the rest
    rng = random.Random(0)
    big = json.dumps([{"i": i, "pad": "".join(rng.choices(string.ascii_letters, k=300))} for i in range(2000)])
    data = compress(big.encode())
    cut.write_bytes(data[: len(data) // 2])
    records = list(iter_local(cut))
    good = [r for r in records if r.error is None]
    assert 0 < len(good) < 2000 and [r.data["i"] for r in good] == list(range(len(good)))
    assert records[-1].error is not None and len(records) == len(good) + 1


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.bz2", ".jsonl.xz", ".jsonl.zst"])
def test_a_truncated_compressed_file_keeps_its_rows_and_rejects_the_tail(tmp_path: Path, suffix: str) -> None:
    rng = random.Random(0)  # text that compresses little: the cut falls well inside the stream
    data = COMPRESS["." + suffix.rsplit(".", 1)[-1]](
        _lines([{"i": i, "pad": "".join(rng.choices(string.ascii_letters, k=300))} for i in range(2000)])
    )
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    records = list(iter_local(path))
    good = [r for r in records if r.error is None]
    assert 0 < len(good) < 2000
    assert [r.data["i"] for r in good] == list(range(len(good)))
    assert records[-1].error is not None and records[-1].error.reason == "truncated file"
    assert str(path) in records[-1].error.detail


def test_empty_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.jsonl: file is empty"):
        list(iter_local(path))


def test_json_array_parquet_and_arrow(tmp_path: Path) -> None:
    rows = [{"q": "a", "n": 1}, {"q": "b", "n": 2}]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.json").write_text(json.dumps(rows))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "d" / "b.parquet")
    with ipc.new_stream(tmp_path / "d" / "c.arrow", table.schema) as writer:  # the `datasets` layout
        writer.write_table(table)
    with ipc.new_file(tmp_path / "d" / "e.arrow", table.schema) as writer:
        writer.write_table(table)
    records = list(iter_local(tmp_path / "d"))
    assert [r.ref for r in records] == [
        f"{f}:{i}" for f in ("a.json", "b.parquet", "c.arrow", "e.arrow") for i in (0, 1)
    ]
    assert all(r.data == rows[i % 2] for i, r in enumerate(records))


def test_parquet_column_selection_and_missing_path(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist([{"a": 1, "heavy": "x" * 100}]), tmp_path / "t.parquet")
    assert [r.data for r in iter_local(tmp_path / "t.parquet", columns=["a", "absent"])] == [{"a": 1}]
    with pytest.raises(InputError, match="no such file or folder"):
        list(iter_location(str(tmp_path / "missing.jsonl")))


def test_corrupt_parquet_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="bad.parquet"):
        list(iter_local(path))


def test_hub_ids_are_recognised_only_when_no_local_path_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_hub_id("openbmb/RLAIF-V-Dataset")
    assert not is_hub_id("no-slash")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "openbmb").mkdir()
    (tmp_path / "openbmb" / "RLAIF-V-Dataset").mkdir()
    assert not is_hub_id("openbmb/RLAIF-V-Dataset")
    # a mistyped local path is tried on the Hub (a recipe's Hub ids resolve elsewhere), and the error says so
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="RLAIF-V-Datset: no local path openbmb/RLAIF-V-Datset .its folder openbmb "
                                         "exists., and cannot open on the Hugging Face Hub"):  # fmt: skip
        list(iter_location("openbmb/RLAIF-V-Datset"))


def test_a_pretty_printed_json_object_is_one_row(tmp_path: Path) -> None:
    """One object over several lines is one row (and an object wrapping a list, one row its adapter judges),
    never a reject per line."""
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    (tmp_path / "one.json").write_text(json.dumps(row, indent=2))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [row, row]}, indent=2))
    assert [(r.ref, r.data) for r in iter_location(str(tmp_path / "one.json"))] == [("one.json:0", row)]
    assert [r.ref for r in iter_location(str(tmp_path / "wrapped.json"))] == ["wrapped.json:0"]
    (tmp_path / "flat.json").write_text(json.dumps(row))  # the same object on one line: the same row
    assert [r.ref for r in iter_location(str(tmp_path / "flat.json"))] == ["flat.json:0"]
    (tmp_path / "lines.json").write_text(json.dumps(row) + "\n" + "{broken\n")  # JSON lines stay lines
    assert [r.error is None for r in iter_location(str(tmp_path / "lines.json"))] == [True, False]


def test_hub_reader_streams_without_decoding_images(tmp_path: Path) -> None:
    """The Hub code path (`datasets` streaming, images left as bytes) run on a local dataset folder."""
    import datasets

    from curation.readers import iter_hub
    from tests.conftest import image_bytes

    folder = tmp_path / "hub_copy" / "data"
    folder.mkdir(parents=True)
    features = datasets.Features({"question": datasets.Value("string"), "image": datasets.Image()})
    rows = {
        "question": ["a", "b"],
        "image": [{"bytes": image_bytes(1), "path": None}, {"bytes": image_bytes(2), "path": None}],
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000.parquet"))
    records = list(iter_hub(str(tmp_path / "hub_copy"), split="train", columns=["image", "question"]))
    assert [r.ref for r in records] == ["train:0", "train:1"]
    assert records[1].data["question"] == "b"
    assert records[1].data["image"]["bytes"] == image_bytes(2)  # bytes, not a decoded PIL image


def _ultrafeedback_rows(shared_data: Path) -> list[dict]:
    path = shared_data / "ultrafeedback-binarized" / "eval_clean.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()][:30]


def _ingest(folder: Path, out: Path, split: str | None = None, config: str | None = None) -> tuple[int, int, int]:
    from curation.ingest import ingest
    from curation.sources import get_adapter
    from curation.sources.base import ReadOptions

    adapter = get_adapter("ultrafeedback_binarized")({}, ReadOptions(config=config, split=split))
    summary = ingest(adapter, str(folder), out)
    return summary.rows_read, summary.pairs, summary.rows_rejected


def test_a_local_copy_of_a_hub_repository_reads_one_split(shared_data: Path, tmp_path: Path) -> None:
    """A folder laid out as the Hub serves UltraFeedback-binarized (`data/<split>-00000-of-00001.parquet`, written
    by `datasets`) gives the adapter's split only, as a Hub read would: test pairs never leak into training."""
    import datasets

    rows = _ultrafeedback_rows(shared_data)
    snapshot = tmp_path / "snapshot"
    (snapshot / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows[:20]).to_parquet(str(snapshot / "data" / "train_prefs-00000-of-00001.parquet"))
    datasets.Dataset.from_list(rows[20:]).to_parquet(str(snapshot / "data" / "test_prefs-00000-of-00001.parquet"))
    assert _ingest(snapshot, tmp_path / "a") == (20, 20, 0)  # the adapter's default split, train_prefs
    assert _ingest(snapshot, tmp_path / "b", split="test_prefs") == (10, 10, 0)
    with pytest.raises(InputError, match="holds the splits test_prefs .*, train_prefs .*, not 'train'; choose one"):
        _ingest(snapshot, tmp_path / "c", split="train")


def test_a_readme_config_picks_its_files(shared_data: Path, tmp_path: Path) -> None:
    rows = _ultrafeedback_rows(shared_data)
    folder = tmp_path / "configs"
    for name, part in (("first", rows[:12]), ("second", rows[12:])):
        (folder / name).mkdir(parents=True)
        (folder / name / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    configs = [{"config_name": n, "data_files": [{"split": "train_prefs", "path": f"{n}/*.jsonl"}]}
               for n in ("first", "second")]  # fmt: skip
    import yaml

    (folder / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': configs})}---\n# a card\n")
    assert _ingest(folder, tmp_path / "a", config="second") == (18, 18, 0)


def test_a_save_to_disk_folder_reads_its_arrow_files_only(shared_data: Path, tmp_path: Path) -> None:
    """`save_to_disk` writes state.json and dataset_info.json beside the Arrow files: metadata, never rows."""
    import datasets

    rows = _ultrafeedback_rows(shared_data)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"), num_shards=3)
    assert _ingest(tmp_path / "one", tmp_path / "a") == (30, 30, 0)
    splits = datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(rows[:25]),
                                   "test_prefs": datasets.Dataset.from_list(rows[25:])})  # fmt: skip
    splits.save_to_disk(str(tmp_path / "dict"))
    assert _ingest(tmp_path / "dict", tmp_path / "b") == (25, 25, 0)
    assert _ingest(tmp_path / "dict", tmp_path / "c", split="test_prefs") == (5, 5, 0)
    with pytest.raises(InputError, match="holds the splits train_prefs, test_prefs, not 'validation'"):
        _ingest(tmp_path / "dict", tmp_path / "d", split="validation")


LAYOUTS = {  # folders as users keep them, each file holding one row
    "one split named": ("train.jsonl", "extra.jsonl", "notes/more.jsonl"),
    "an eval file beside training files": ("eval_clean.jsonl", "label_flip.jsonl"),
    "no split named": ("pairs.jsonl", "more/pairs.jsonl"),
    "split folders": ("train/a.jsonl", "test/b.jsonl", "other/c.jsonl"),
    "sharded": ("data/train_prefs-00000-of-00002.jsonl", "data/train_prefs-00001-of-00002.jsonl", "x.jsonl"),
    "hidden and special folders": (".hidden.jsonl", ".cache/huggingface/x.jsonl", "__pycache__/y.jsonl", "_a.jsonl"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_folder_gives_the_files_datasets_gives(tmp_path: Path, layout: str) -> None:
    """Each split is the files `datasets` resolves for it, also where a folder names one split only: files named
    by no split beside `train.jsonl` are left unread, and `eval_clean.jsonl` is a test split, never training. A
    folder that names no split is one split, read whole whatever its name (a benchmark's `test`), but for hidden
    files and what lies in hidden or `__*` folders (the `.cache/` that `hf download` writes)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    from curation.readers import source_files

    for name in LAYOUTS[layout]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"a": 1}\n')
    patterns = get_data_patterns(str(tmp_path))
    resolved = DataFilesDict.from_patterns(patterns, base_path=str(tmp_path))
    expected = {str(split): sorted(Path(f).relative_to(tmp_path).as_posix() for f in files)
                for split, files in resolved.items()}  # fmt: skip

    def read(split: str) -> list[str]:
        return sorted(p.relative_to(tmp_path).as_posix() for p in source_files(tmp_path, None, split))

    for split in ("train", "test", "train_prefs"):
        if patterns == {"train": ["**"]}:
            assert read(split) == expected["train"]
        elif split in expected:
            assert read(split) == expected[split]
        else:
            with pytest.raises(InputError, match=f"holds the splits .*, not {split!r}"):
                read(split)


_NAME_PARTS = ("train", "test", "valid", "dev", "eval", "training", "validation", "extra", "data", "train_prefs",
               "my-train", "pretrain", "train2", "x_test_y", ".hidden", "__pycache__", "dataset_info")  # fmt: skip


@st.composite
def _layouts(draw: st.DrawFn) -> list[str]:
    """Up to 4 data files of a folder, named from split keywords and their near misses, some sharded."""
    names: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        ext = draw(st.sampled_from((".jsonl", ".json", ".ndjson", ".parquet", ".arrow", ".jsonl.gz", ".json.zst")))
        if draw(st.booleans()) and draw(st.booleans()):
            name = f"data/{draw(st.sampled_from(_NAME_PARTS[:10]))}-0000{draw(st.integers(0, 1))}-of-00002{ext}"
        else:
            name = "/".join(draw(st.lists(st.sampled_from(_NAME_PARTS), min_size=1, max_size=3))) + ext
        if not any(n.startswith(name + "/") or name.startswith(n + "/") or n == name for n in names):
            names.append(name)
    return names


@given(_layouts())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_folder_gives_the_files_datasets_gives(tmp_path_factory: pytest.TempPathFactory, layout: list[str]) -> None:
    """The layouts above, drawn at random: each split is the set of files `datasets` resolves for it, of the format
    it infers for the split (`datasets` lists a file twice where two of its patterns match it; it is read once
    here)."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns
    from datasets.load import infer_module_for_data_files_list
    from datasets.packaged_modules import _MODULE_TO_EXTENSIONS

    from curation.readers import source_files

    root = tmp_path_factory.mktemp("layout")
    for name in layout:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text('{"a": 1}\n')
    try:
        patterns = get_data_patterns(str(root))
    except EmptyDatasetError:  # no data file `datasets` would read (all hidden): none is read here either
        with pytest.raises(InputError, match="no .* files found"):
            source_files(root, None, "train")
        return
    resolved = DataFilesDict.from_patterns(patterns, base_path=str(root))
    for split, files in resolved.items():
        resolved[split] = files.filter(extensions=_MODULE_TO_EXTENSIONS[infer_module_for_data_files_list(files)[0]])
    expected = {str(k): sorted({Path(f).relative_to(root).as_posix() for f in v}) for k, v in resolved.items()}
    for split in ("train", "test", "validation"):
        want = expected["train"] if patterns == {"train": ["**"]} else expected.get(split)
        if want is None:
            with pytest.raises(InputError, match="holds the splits"):
                source_files(root, None, split)
        else:
            assert sorted(p.relative_to(root).as_posix() for p in source_files(root, None, split)) == want


def test_a_missing_split_names_the_files_each_split_was_named_by(tmp_path: Path) -> None:
    from curation.readers import files_note, source_files

    for name in ("eval_clean.jsonl", "label_flip.jsonl"):
        (tmp_path / name).write_text('{"a": 1}\n')
    with pytest.raises(InputError, match=r"holds the splits test \(eval_clean.jsonl\), not 'train'; choose one"):
        source_files(tmp_path, None, "train")
    note = files_note(tmp_path, source_files(tmp_path, None, "test"), "test")
    assert "read 1 of its 2 data files, those of the split 'test'" in str(note)
    assert str(note).endswith("; not read: label_flip.jsonl")  # the files left unread are named
    for k in range(7):
        (tmp_path / f"extra_{k}.jsonl").write_text('{"a": 1}\n')
    note = files_note(tmp_path, source_files(tmp_path, None, "test"), "test")
    assert str(note).endswith("; not read: extra_0.jsonl, extra_1.jsonl, extra_2.jsonl, extra_3.jsonl, "
                              "extra_4.jsonl, and 3 more")  # fmt: skip


def test_a_stray_file_of_another_format_is_left_unread_and_named(tmp_path: Path, run_ingest: RunIngest) -> None:
    """Two parquet files and a JSON lines file beside them: `datasets` reads the split as parquet and leaves the
    stray file out, so the ingest reads the two parquet files' rows only, and the note names the stray file apart
    from the files of another split."""
    from curation.sources import get_adapter
    from curation.sources.base import ReadOptions

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        pq.write_table(pa.table({"prompt": [f"Name colour {name}."], "chosen": ["Blue."], "rejected": ["Seven."]}),
                       src / f"{name}.parquet")  # fmt: skip
    (src / "notes.jsonl").write_text('{"prompt": "Stray.", "chosen": "x", "rejected": "y"}\n')
    result = run_ingest("ultrafeedback_binarized", src)
    assert (result.summary.rows_read, len(result.pairs), len(result.rejects)) == (2, 2, 0)
    note = get_adapter("ultrafeedback_binarized")().files_note(str(src))
    assert note == (f"{src}: read 2 of its 3 data files; not read, as `datasets` reads a split in one format, that "
                    "of the extension most of its files carry (.parquet; in a draw the first of .parquet, .arrow, "
                    ".jsonl, .json): notes.jsonl")  # fmt: skip
    (src / "test.jsonl").write_text('{"prompt": "Held out.", "chosen": "x", "rejected": "y"}\n')
    (src / "train.parquet").write_bytes((src / "a.parquet").read_bytes())
    (src / "a.parquet").rename(src / "train-a.parquet")
    (src / "notes.jsonl").rename(src / "train-notes.jsonl")
    (src / "train-extra.csv").write_text("prompt,chosen,rejected\nQ,A,B\n")  # a table this reader does not take
    note = get_adapter("ultrafeedback_binarized")({}, ReadOptions(split="train")).files_note(str(src))
    assert str(note).endswith(
        "; not read, of a format this reader does not take (CSV or TSV, which `datasets` "
        "reads; convert them to parquet or JSON lines to read them): train-extra.csv"
    )
    (src / "train-extra.csv").unlink()
    note = get_adapter("ultrafeedback_binarized")({}, ReadOptions(split="train")).files_note(str(src))
    assert note == (
        f"{src}: read 2 of its 5 data files, those of the split 'train' as the Hub names splits "
        "(--split, --config and --data-dir choose others); not read: b.parquet, test.jsonl; not read, as "
        "`datasets` reads a split in one format, that of the extension most of its files carry (.parquet; in a draw "
        "the first of .parquet, .arrow, .jsonl, .json): train-notes.jsonl"
    )


def test_a_readme_is_read_as_datasets_reads_it(tmp_path: Path) -> None:
    """The configs `datasets` applies: a README's YAML block after a byte-order mark or a blank line, the configs
    of `.huggingface.yaml` over the README's, none under a data_dir (its split conventions apply there); `.ndjson`
    files are JSON lines."""
    import datasets
    import yaml

    from curation.readers import source_files

    for name, rows in (("x.jsonl", 1), ("y.jsonl", 2), ("data/a/train.jsonl", 1), ("data/b/train.jsonl", 2),
                       ("data/b/other.jsonl", 3), ("z.ndjson", 4)):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("".join(f'{{"a": {k}}}\n' for k in range(rows)))

    def card(path: str, front: str = "") -> str:
        return f"{front}---\n{yaml.safe_dump({'configs': [{'config_name': 'default', 'data_files': path}]})}---\n"

    def compare(data_dir: str | None = None) -> list[str]:
        found = sorted(p.relative_to(tmp_path).as_posix() for p in source_files(tmp_path, None, "train", data_dir))
        want = datasets.load_dataset(str(tmp_path), split="train", data_dir=data_dir)
        assert len(want) == sum(len(p.read_text().splitlines()) for p in map(tmp_path.joinpath, found))
        return found

    for front in ("\ufeff", "\n\n"):
        (tmp_path / "README.md").write_text(card("x.jsonl", front), encoding="utf-8")
        assert compare() == ["x.jsonl"]
    (tmp_path / "README.md").write_text(card("**/*.jsonl"), encoding="utf-8")
    assert compare("data/b") == ["data/b/train.jsonl"]
    with pytest.raises(InputError, match="declares the configs default, not 'typo'"):  # still checked
        source_files(tmp_path, "typo", "train", "data/b")
    for hidden in (".data/h.jsonl", ".cache/c.jsonl", "__x/u.jsonl"):  # read only where a pattern names them
        (tmp_path / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / hidden).write_text('{"a": 1}\n')
    assert compare() == ["data/a/train.jsonl", "data/b/other.jsonl", "data/b/train.jsonl", "x.jsonl", "y.jsonl"]
    (tmp_path / "README.md").write_text(card(".data/*.jsonl"), encoding="utf-8")
    assert compare() == [".data/h.jsonl"]
    only = tmp_path / "only"  # a repository whose one data file is hidden, named by its config
    (only / ".data").mkdir(parents=True)
    (only / ".data" / "h.jsonl").write_text('{"a": 1}\n')
    (only / "README.md").write_text(card(".data/h.jsonl"), encoding="utf-8")
    assert source_files(only, None, "train") == [only / ".data" / "h.jsonl"]
    (tmp_path / ".huggingface.yaml").write_text(yaml.safe_dump({"configs": [{"config_name": "default",
                                                                              "data_files": "*.ndjson"}]}))  # fmt: skip
    assert compare() == ["z.ndjson"]


def test_splits_are_read_from_the_supported_files_only(tmp_path: Path) -> None:
    """Images in split-named folders beside the rows are not a split layout; mixed formats still split; symlinked
    files (a Hub cache snapshot) keep their names; a README's configs and --data-dir choose as on the Hub."""
    import yaml

    from curation.readers import source_files

    def names(found: list[Path], root: Path) -> list[str]:
        return [f.relative_to(root).as_posix() for f in found]

    rows = tmp_path / "rows"
    for name in ("rows.jsonl", "coco/train2017/1.jpg", "coco/val2017/2.jpg"):
        (rows / name).parent.mkdir(parents=True, exist_ok=True)
        (rows / name).write_text("{}\n")
    assert names(source_files(rows, None, "train"), rows) == ["rows.jsonl"]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "train.jsonl").write_text("{}\n")
    pq.write_table(pa.table({"a": [1]}), mixed / "test.parquet")
    assert names(source_files(mixed, None, "train"), mixed) == ["train.jsonl"]
    assert names(source_files(mixed, None, "test"), mixed) == ["test.parquet"]
    snapshot = tmp_path / "snapshot"
    (snapshot / "data").mkdir(parents=True)
    for split in ("train", "test"):
        (tmp_path / f"blob-{split}").write_text("{}\n")
        (snapshot / "data" / f"{split}-00000-of-00001.jsonl").symlink_to(tmp_path / f"blob-{split}")
    assert names(source_files(snapshot, None, "test"), snapshot) == ["data/test-00000-of-00001.jsonl"]
    configs = tmp_path / "configs"
    for name in ("a/x.jsonl", "b/y.jsonl"):
        (configs / name).parent.mkdir(parents=True, exist_ok=True)
        (configs / name).write_text("{}\n")
    declared = [{"config_name": n, "data_files": f"{n}/*.jsonl"} for n in ("a", "b")]
    (configs / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': declared})}---\n")
    with pytest.raises(InputError, match="declares the configs a, b; choose one with --config"):
        source_files(configs, None, "train")
    with pytest.raises(InputError, match="declares the configs a, b, not 'c'"):
        source_files(configs, "c", "train")
    assert names(source_files(configs, "b", "train"), configs) == ["b/y.jsonl"]
    for declared, refused in (([{"config_name": "a", "data_files": [{"split": "train", "path": 5}]}],
                               "the split 'train' has a path that is not a file pattern .5."),
                              ([{"config_name": "a", "data_dir": 7}], "data_dir is not a folder name .7."),
                              ([{"config_name": "a", "data_files": [{"split": "test", "path": "c/*.jsonl"}]}],
                               "the split 'test' is c/.*.jsonl, which matches no file of a supported")):  # fmt: skip
        (configs / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': declared})}---\n")
        with pytest.raises(InputError, match=f"README.md: config 'a': {refused}"):
            source_files(configs, "a", "train")
    with pytest.raises(InputError, match="coco: no .* files found"):  # a data_dir of images only
        source_files(rows, None, "train", data_dir="coco")
    with pytest.raises(InputError, match="no such folder .--data-dir nope."):
        source_files(rows, None, "train", data_dir="nope")


def test_a_key_given_twice_makes_its_row_a_reject(tmp_path: Path) -> None:
    """pyarrow, DuckDB and `datasets` refuse a file with a key given twice in an object, where Python's parser
    keeps the last value: that row is a reject naming the key, in JSON lines, arrays and one-object files alike,
    and the other rows are read."""
    twice = '{"prompt": "p", "chosen": "good", "chosen": "bad"}'
    nested = '{"prompt": "p", "meta": {"id": 1, "id": 2}}'
    (tmp_path / "rows.jsonl").write_text(f'{{"a": 1}}\n{twice}\n{nested}\n{{"a": 2}}\n')
    (tmp_path / "array.json").write_text(f'[{{"a": 1}}, {twice}, {{"a": 2}}]')
    (tmp_path / "one.json").write_text('{\n  "a": 1,\n  "a": 2\n}\n')
    for name, refs in (("rows.jsonl", [0, 1, 2, 3]), ("array.json", [0, 1, 2]), ("one.json", [0])):
        records = list(iter_local(tmp_path / name))
        assert [r.ref for r in records] == [f"{name}:{i}" for i in refs]
        errors = [(r.error.reason, r.error.detail) if r.error else r.data for r in records]
        expected = {
            "rows.jsonl": [{"a": 1}, ("malformed json", "rows.jsonl:1: key 'chosen' given twice in an object"),
                           ("malformed json", "rows.jsonl:2: key 'id' given twice in an object"), {"a": 2}],
            "array.json": [{"a": 1}, ("malformed json", "array.json:1: key 'chosen' given twice in an object"),
                           {"a": 2}],
            "one.json": [("malformed json", "one.json:0: key 'a' given twice in an object")],
        }  # fmt: skip
        assert errors == expected[name]


def test_links_that_are_no_file_are_each_a_reject_and_never_opened(tmp_path: Path, run_ingest: RunIngest) -> None:
    """In a parquet folder: a link to a FIFO (opening it would wait for ever), a link to nothing and a link loop are
    each their file's reject saying why, on the row path (the columnar plan needs regular files); a FIFO itself is
    not listed. The good file's row is read."""
    import os

    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"prompt": ["Name a colour."], "chosen": ["Blue."], "rejected": ["Seven."]}),
                   src / "a.parquet")  # fmt: skip
    os.mkfifo(tmp_path / "fifo.parquet")
    os.mkfifo(src / "b-fifo.parquet")
    (src / "c-link.parquet").symlink_to(tmp_path / "fifo.parquet")
    (src / "d-gone.parquet").symlink_to(tmp_path / "nowhere.parquet")
    (src / "e-loop.parquet").symlink_to("e-loop.parquet")
    assert [p.name for p in list_files(src)] == ["a.parquet", "c-link.parquet", "d-gone.parquet", "e-loop.parquet"]

    def waited(*_: object) -> None:
        raise TimeoutError("the ingest opened a FIFO and waits for a writer")

    signal.signal(signal.SIGALRM, waited)
    signal.alarm(60)  # a regression would hang the test run: it fails instead
    try:
        result = run_ingest("ultrafeedback_binarized", src)
    finally:
        signal.alarm(0)
    assert result.summary.pairs == 1
    details = [r["detail"] for r in result.rejects]
    assert [d.split(": ", 1)[0] for d in details] == ["c-link.parquet:0+", "d-gone.parquet:0+", "e-loop.parquet:0+"]
    assert details[0].endswith("not a regular file (a FIFO, a socket or a device)")
    assert details[1].endswith("a link to nothing") and "cannot be resolved" in details[2]
