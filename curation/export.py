"""`curate export`: a build in the Hugging Face Hub's dataset layout, written locally, then uploaded in one commit.

Layout of the local folder:
- `data/<config>/train-NNNNN-of-NNNNN.parquet`: config `default` is the whole mixture, one config per source.
  Columns in the conversational preference form TRL's reward and DPO trainers read (`prompt`: messages;
  `chosen`, `rejected`: one assistant message each; `images`: the `datasets` Image feature, bytes embedded),
  then the canonical columns (`pair_id`, `source`, ..., `image_sha256` for the image hashes). Row groups of
  100 rows when images are embedded (the Hub viewer reads row groups), files well under 5 GB.
- `README.md`: a dataset card with YAML metadata (configs, license, task categories, size category) and the
  build's card (recipe, sources and licenses, funnel, decontamination); `recipe.yaml` and `manifest.json`.

The Hub token comes from the environment (`HF_TOKEN`) or the Hub's login store through `huggingface_hub`; it is
never printed, logged or written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.build_card import shards_text
from curation.build_dir import IMAGES, MANIFEST, BuildDir, manifest_recipe
from curation.errors import InputError
from curation.ingest import PARTIAL_MARK, fresh_partial, publish_folder
from curation.readers import HUB_ID

ROWS_PER_GROUP_WITH_IMAGES = 100
ROWS_PER_GROUP_TEXT = 10_000
MAX_FILE_BYTES = 1 << 30  # far below the Hub's 5 GB limit per file
# License strings that restrict use; a card must say so and an export must not claim a permissive license.
RESTRICTIVE = ("nc", "non-commercial", "noncommercial", "research", "unknown", "not stated", "other")

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@dataclass(frozen=True)
class ExportPlan:
    folder: Path
    files: list[tuple[str, int]]  # (path relative to the folder, bytes)
    configs: list[str]
    licenses: dict[str, list[str]]  # source -> licenses of its pairs
    local_paths: list[str]  # absolute local paths the published recipe and manifest name (`named_local_paths`)


def named_local_paths(manifest: dict[str, Any]) -> list[str]:
    """The absolute local paths a build's recipe text names (any value written as one: sources', benchmarks',
    models' folders) and its manifest records (the files ops read): an export publishes both as they are."""

    def strings(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    found = [s for s in strings(manifest_recipe(manifest)) if s.startswith(("/", "~"))]
    found += [f["path"] for files in manifest.get("op_inputs", {}).values() for f in files]
    return sorted(set(found))


def restrictive(license_text: str | None) -> bool:
    text = (license_text or "unknown").lower()
    return any(token in text.replace("-", " ").split() or token in text for token in RESTRICTIVE)


def _hf_features() -> Any:
    """The `datasets` features of the export, so `load_dataset` decodes `images` as images."""
    from datasets import Features, Image, Sequence, Value

    message = {"role": Value("string"), "content": Value("string")}
    features = {
        "prompt": [message],
        "chosen": [message],
        "rejected": [message],
        "images": Sequence(Image()),
    }
    canonical = {
        "pair_id": Value("string"), "prompt_id": Value("string"), "source": Value("string"),
        "source_row": Value("string"), "subset": Value("string"), "modality": Value("string"),
        "image_sha256": Sequence(Value("string")), "chosen_score": Value("float64"),
        "rejected_score": Value("float64"), "score_margin": Value("float64"), "tie": Value("bool"),
        "chosen_model": Value("string"), "rejected_model": Value("string"), "category": Value("string"),
        "language": Value("string"), "license": Value("string"), "binarization": Value("string"),
        "meta": Value("string"),
    }  # fmt: skip
    return Features({**features, **canonical})


def to_hub_table(pairs: pa.Table, image_bytes: dict[str, bytes]) -> pa.Table:
    """Canonical pairs -> the export's columns (TRL's conversational form first, canonical columns after)."""
    rows = pairs.to_pylist()
    assistant = [[{"role": "assistant", "content": r["chosen"]}] for r in rows]
    rejected = [[{"role": "assistant", "content": r["rejected"]}] for r in rows]
    images = [[{"bytes": image_bytes[h], "path": None} for h in r["images"]] for r in rows]
    columns: dict[str, pa.Array] = {
        "prompt": pa.array([r["prompt"] for r in rows], MESSAGES),
        "chosen": pa.array(assistant, MESSAGES),
        "rejected": pa.array(rejected, MESSAGES),
        "images": pa.array(images, pa.list_(IMAGE)),
    }
    for name in pairs.column_names:
        if name not in ("prompt", "chosen", "rejected", "images"):
            columns[name] = pairs.column(name)
    columns["image_sha256"] = pairs.column("images")
    # TRL's reward trainer reads a `margin` column as a loss margin: the source's score gap must not be one.
    columns["score_margin"] = columns.pop("margin")
    table = pa.table(columns)
    order = ["prompt", "chosen", "rejected", "images", "pair_id", "prompt_id", "source", "source_row", "subset",
             "modality", "image_sha256", "chosen_score", "rejected_score", "score_margin", "tie", "chosen_model",
             "rejected_model", "category", "language", "license", "binarization", "meta"]  # fmt: skip
    features = _hf_features()  # Image declared even for text-only exports: their image lists are empty
    metadata = {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    return table.select(order).replace_schema_metadata(metadata)


def _images_of(build: BuildDir, hashes: set[str]) -> dict[str, bytes]:
    if not hashes:
        return {}
    path = build.file(IMAGES)
    table = pq.read_table(path, columns=["sha256", "bytes"], filters=[("sha256", "in", sorted(hashes))])
    found = dict(zip(table.column("sha256").to_pylist(), table.column("bytes").to_pylist(), strict=True))
    missing = hashes - set(found)
    if missing:
        raise InputError(f"{path}: {len(missing)} image(s) referenced by the shards are missing, e.g. {min(missing)}")
    return found


def _write_config(build: BuildDir, pairs: pa.Table, folder: Path, config: str) -> list[Path]:
    """Parquet files of one config, images embedded, a new file whenever one passes MAX_FILE_BYTES."""
    has_images = any(len(h) for h in pairs.column("images").to_pylist())
    group = ROWS_PER_GROUP_WITH_IMAGES if has_images else ROWS_PER_GROUP_TEXT
    target = folder / "data" / config
    target.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    writer: pq.ParquetWriter | None = None
    size = 0
    for start in range(0, max(pairs.num_rows, 1), group):
        chunk = pairs.slice(start, group)
        hashes = {h for row in chunk.column("images").to_pylist() for h in row}
        table = to_hub_table(chunk, _images_of(build, hashes))
        if writer is None or size > MAX_FILE_BYTES:
            if writer is not None:
                writer.close()
            parts.append(target / f"part-{len(parts):05d}.tmp")
            writer = pq.ParquetWriter(parts[-1], table.schema, compression="zstd")
            size = 0
        writer.write_table(table, row_group_size=group)
        size += table.nbytes
    if writer is not None:
        writer.close()
    final = []
    for index, part in enumerate(parts):  # the count is known only now
        path = target / f"train-{index:05d}-of-{len(parts):05d}.parquet"
        part.replace(path)
        final.append(path)
    return final


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M")):  # fmt: skip
        if n < limit:
            return label
    return "10M<n<100M"


# License ids the Hub accepts in card metadata (the common ones of preference data); anything else is `other`.
HUB_LICENSES = frozenset({
    "mit", "apache-2.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-4.0", "cc0-1.0", "odc-by", "odbl", "pddl", "bsd-3-clause", "bsd-2-clause", "gpl-3.0", "lgpl-3.0",
    "openrail", "llama2", "llama3", "llama3.1", "llama3.2", "gemma", "unknown",
})  # fmt: skip


def _hub_license(text: str) -> str:
    candidate = text.strip().lower().replace(" ", "-")
    return candidate if candidate in HUB_LICENSES else "other"


def decide_license(licenses: dict[str, list[str]], requested: str | None, force: bool) -> tuple[str, bool]:
    """(the card's license id, whether any source restricts use); refuses a permissive claim over restrictive data."""
    distinct = sorted({lic for values in licenses.values() for lic in values})
    restricted = any(restrictive(lic) for lic in distinct) or not distinct
    if requested is not None:
        if restricted and not restrictive(requested) and not force:
            raise InputError(
                f"--license {requested} contradicts the sources' licenses ({', '.join(distinct) or 'unknown'}): "
                "some are non-commercial, research-only or unknown. Pass --force-license to override."
            )
        return _hub_license(requested), restricted
    return (_hub_license(distinct[0]) if len(distinct) == 1 else "other"), restricted


def _config_size(pairs: pa.Table) -> str:
    """`93 rows: 31 distinct pairs, each upsampled pair's copies a row`, or `175 rows` (each a distinct pair)."""
    rows, distinct = pairs.num_rows, len(pc.unique(pairs["pair_id"]))
    return (
        f"{rows:,} rows"
        if rows == distinct
        else f"{rows:,} rows: {distinct:,} distinct pairs, an upsampled pair's copies each a row"
    )


def card_text(
    build: BuildDir,
    manifest: dict[str, Any],
    configs: dict[str, str],
    licenses: dict[str, list[str]],
    license_id: str,
    restricted: bool,
) -> str:
    rows = manifest["rows_in_shards"]
    has_images = manifest.get("images_in_shards", manifest["images"]) > 0
    meta: dict[str, Any] = {
        "pretty_name": manifest["recipe"]["name"],
        "license": license_id,
        "task_categories": ["image-text-to-text", "text-generation"] if has_images else ["text-generation"],
        "tags": ["reward-modeling", "preference", "rlhf", "dpo", "rm-workbench"],
        "size_categories": [_size_category(rows)],
        "configs": [
            {
                "config_name": c,
                "data_files": [{"split": "train", "path": f"data/{c}/train-*"}],
                **({"default": True} if c == "default" else {}),
            }
            for c in configs
        ],
    }
    if license_id == "other":
        meta["license_name"] = "see-license-notes"
        meta["license_link"] = "LICENSE_NOTES.md"
    import yaml

    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
             f"# {manifest['recipe']['name']}", "",
             f"Preference pairs curated with rm-workbench (`curate build`): {shards_text(manifest, False)}.", "",
             "| config | what | size |", "|---|---|---|",
             *(f"| `{c}` | {'the whole mixture' if c == 'default' else 'the pairs of this source'} | {size} |"
               for c, size in configs.items()), ""]  # fmt: skip
    if restricted:
        lines += ["**Licensing: some sources are non-commercial, research-only or of unknown license. "
                  "Check every source's terms below before use.**", ""]  # fmt: skip
    lines += ["## Sources and licenses", "", "| source | licenses |", "|---|---|"]
    lines += [f"| {s} | {', '.join(v) or 'unknown'} |" for s, v in licenses.items()]
    lines += ["", "## Columns", "",
              "`prompt` (messages, one `<image>` placeholder per image), `chosen` and `rejected` (one assistant "
              "message each) and `images` follow TRL's conversational preference format; `pair_id`, `prompt_id` "
              "(content hashes), `source`, `source_row`, scores, `score_margin` (the source's score gap, named so "
              "that TRL does not take it for a loss margin), `tie`, models, `license`, `image_sha256` and `meta` "
              "(unmapped native fields) are the canonical schema.", ""]  # fmt: skip
    card = build.card()
    lines += ["## Build report", "", _under_a_heading(card), ""]
    lines += ["## Recipe", "", "```yaml", manifest["recipe"]["text"].rstrip(), "```", ""]
    return "\n".join(lines)


def check_repo_id(repo: str) -> None:
    """A repo id the Hub takes: `HUB_ID`'s form in ASCII, and `huggingface_hub`'s own check (no `.git` ending)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        ok = False
    else:
        ok = repo.isascii() and HUB_ID.fullmatch(repo) is not None
    if not ok:
        raise InputError(f"--repo {repo!r}: not a Hub repo id (USER/NAME: ASCII letters, digits, -, _ and ., without "
                         "-- or .., not ending in .git)")  # fmt: skip


def check_export_folder(local_dir: Path, replace: bool, source: Path | None = None) -> None:
    """`local_dir` may be written: it is new or empty, or `replace` is given (`publish_export` then checks that it
    holds only what an export writes); it is neither inside what is exported (`source`) nor holds it."""
    if local_dir.is_symlink() or (local_dir.exists() and not local_dir.is_dir()):
        raise InputError(f"{local_dir}: not a folder; choose another --local-dir")
    if source is not None:
        here, there = local_dir.resolve(), source.resolve()
        if here == there or there in here.parents or here in there.parents:
            raise InputError(f"--local-dir {local_dir}: inside {source}, or holding it; choose a folder elsewhere")
    if local_dir.is_dir() and any(local_dir.iterdir()) and not replace:
        raise InputError(
            f"{local_dir}: exists and is not empty; choose another --local-dir, remove it, or pass --replace"
        )


def export_partial(local_dir: Path) -> Path:
    """The new folder `LOCAL_DIR.partial` an export is written in before `publish_export` (`fresh_partial`: what an
    interrupted export left there is removed first; anything else there, a build or a folder of the user's, is
    refused, never deleted)."""
    return fresh_partial(local_dir, f"in the way of the export to {local_dir} (written beside it first), and not "
                                    "one an earlier export left; move it, or choose another --local-dir")  # fmt: skip


def publish_export(tmp: Path, local_dir: Path, may_hold: tuple[str, ...] = ()) -> None:
    """Move the complete export `tmp` to `local_dir`. An earlier export there (it has its card, README.md) is
    replaced only when each of its entries is one this export writes, or one of `may_hold` (what an export writes
    only sometimes): a clone of the Hub repo, with its .git, a file of the user's, or a model folder of a run is
    never deleted."""
    if local_dir.is_dir() and any(local_dir.iterdir()):
        ours = {p.name for p in tmp.iterdir() if p.name != PARTIAL_MARK} | set(may_hold)
        foreign = sorted(p.name for p in local_dir.iterdir() if p.name not in ours)
        problem = f"holds what an export does not write ({', '.join(foreign[:3])})" if foreign else None
        if problem is None and not (local_dir / "README.md").is_file():
            problem = "holds no card (README.md), so no earlier export"
        if problem:
            shutil.rmtree(tmp)
            raise InputError(f"{local_dir}: {problem}; not replaced")
    publish_folder(tmp, local_dir)


def export_build(
    location: Path,
    local_dir: Path,
    *,
    license: str | None = None,
    force_license: bool = False,
    replace: bool = False,
    need_token: bool = False,
) -> ExportPlan:
    build = BuildDir.open(location)
    check_export_folder(local_dir, replace, build.path)
    manifest = build.manifest
    pairs = build.pairs(check_text=True)  # an export publishes every value: a damaged one is found first
    build.check_shards_unchanged()  # the rows as built, which their content ids name
    build.images()  # and its image table is one this build wrote (its columns, its statistics)
    # the card gives the manifest's counts: they must be the shards' (a manifest edited by hand is not)
    distinct = len(pc.unique(pairs["pair_id"]))
    for key, found in (("rows_in_shards", pairs.num_rows), ("pairs_in_shards", distinct)):
        if key in manifest and manifest[key] != found:
            raise InputError(f"{build.path}/manifest.json: `{key}` is {manifest[key]}, where the shards hold {found}; "
                             "the manifest was changed since the build; build again")  # fmt: skip
    if not pairs.num_rows:
        raise InputError(f"{location}: the build has no pair in its shards; nothing to export (`curate stats` shows "
                         "where its rows went)")  # fmt: skip
    sources = sorted(set(pairs.column("source").to_pylist()))
    if "default" in sources:
        raise InputError(f"{location}: a source named 'default' would clash with the whole-mixture config")
    licenses = {s: sorted({r["license"] or "unknown" for r in pairs.filter(pc.equal(pairs["source"], s))
                          .select(["license"]).to_pylist()}) for s in sources}  # fmt: skip
    license_id, restricted = decide_license(licenses, license, force_license)
    if need_token:  # an upload follows: asked before anything is written
        hub_token()
    tmp = export_partial(local_dir)
    configs = ["default", *sources]
    try:
        sizes = {}
        for config in configs:
            rows = pairs if config == "default" else pairs.filter(pc.equal(pairs["source"], config))
            _write_config(build, rows, tmp, config)
            sizes[config] = _config_size(rows)
        (tmp / "README.md").write_text(card_text(build, manifest, sizes, licenses, license_id, restricted))
        if license_id == "other":
            notes = ["# License notes", "", "The sources of this dataset and their licenses:", ""]
            notes += [f"- {s}: {', '.join(v)}" for s, v in licenses.items()]
            (tmp / "LICENSE_NOTES.md").write_text("\n".join(notes) + "\n")
        (tmp / "recipe.yaml").write_text(manifest["recipe"]["text"])
        shutil.copy(build.file(MANIFEST), tmp / "manifest.json")
    except BaseException:  # nothing half-written is left beside the export
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_export(tmp, local_dir, may_hold=("LICENSE_NOTES.md",))
    files = [
        (p.relative_to(local_dir).as_posix(), p.stat().st_size) for p in sorted(local_dir.rglob("*")) if p.is_file()
    ]
    return ExportPlan(local_dir, files, configs, licenses, named_local_paths(manifest))


def hub_token() -> str:
    """The Hugging Face token (HF_TOKEN or the login store), only checked for presence and never shown; an upload
    asks for it before anything is written, so a missing one leaves no folder to clear."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise InputError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    return token


def upload(
    folder: Path, repo: str, *, repo_type: str = "dataset", private: bool = False, dry_run: bool = False
) -> list[str]:
    """One commit with every file of `folder`; with `dry_run`, only the lines saying what would be sent."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    lines = [f"create {repo_type} repo {repo} (private={private}) if it does not exist",
             f"upload {len(files)} files in one commit:", *(f"  {f}" for f in files)]  # fmt: skip
    if dry_run:
        return ["[dry run] would " + lines[0], "[dry run] would " + lines[1], *lines[2:]]
    from huggingface_hub import HfApi

    token = hub_token()
    api = HfApi()
    try:
        api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type=repo_type,
                                   commit_message="Upload from rm-workbench")  # fmt: skip
    except Exception as exc:  # network and Hub errors: report the kind, never echo a request that holds the token
        message = str(exc).replace(token, "***")
        raise InputError(f"upload to {repo} failed: {type(exc).__name__}: {message[:300]}") from None
    return [*lines, f"done: {commit}"]


def _under_a_heading(markdown: str) -> str:
    """`markdown` with its `#` and `##` headings made `###`, to sit under a `##` heading; lines in fenced code
    blocks (the recipe's YAML comments) stay as they are."""
    out, fenced = [], False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith(("# ", "## ")):
            line = "### " + line.split(" ", 1)[1]
        out.append(line)
    return "\n".join(out)
