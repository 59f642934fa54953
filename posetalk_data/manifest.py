"""Derived manifests over finished builds: filter, split and merge (they return data; the CLI prints it). Reading is
`posetalk_data.reading`, verifying `posetalk_data.verify`, stats and compare `posetalk_data.inspection`, rebuilding
`posetalk_data.rebuild`.

Manifest format. Version 1 (what `build` writes; no "manifest_version" key): every sample of every listed shard
belongs to the dataset. Version 2 ("manifest_version": 2, what filter/split/merge write): every shard entry also
carries "keys", the subset of that shard's samples in this dataset ("samples" stays the shard's own sample count,
which verify checks the tar against). A v2 manifest has its own table `<stem>.samples.parquet` beside it (its
`shard` column relative to it), counts recomputed over its keys, no failures table, and "derived": {op, arguments,
inputs: [{manifest: file name, sha256}]}. Derived manifests never rewrite shards: they point at the same tar files.
A shard outside the new manifest's folder is hard-linked (copied across file systems) into
`<folder>/shards/<sha256[:12]>-<name>`, so every path stays inside the dataset folder. A derived manifest never
replaces a file it was made from, a build's own manifest or tables, or a file that is not a derived manifest.

`where` (filter): a small whitelist over Python's `ast` (`posetalk_data.where`), evaluated per row of
samples.parquet. A row where the expression fails on a missing value (None > 3) is not kept; how many rows failed,
and why, is reported, and an expression that fails on every row is an error.
Example: `video_id in ['a', 'b'] and pose_fit_rms < 0.02 and 'small_face' not in flags`.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Callable

from . import storage
from .reading import FORMAT, URL, ManifestError, load_manifest, selection, shard_location
from .shards import SAMPLES_SCHEMA, write_table
from .splits import SPLIT_FRACTIONS, SPLIT_SEED, check_fractions, split_of
from .where import WhereError, compile_where

# what changes the arrays (av_sync: the clip's audio, and so every speech feature)
FEATURE_VERSIONS = ("face_detector", "face_mesh", "landmarks", "face_template", "gaze", "av_sync")


def _place(base, entry: dict, out_dir) -> str:
    """The shard's path relative to out_dir; a shard outside it is linked (or copied) in, never referenced via '..'.
    With a store on either side: a shard in a store outside out_dir is referenced by its URL; a local shard is
    uploaded beside a manifest in a store."""
    if URL.match(entry["path"]):
        return entry["path"]
    if storage.is_url(base) or storage.is_url(out_dir):
        src = shard_location(base, entry["path"])
        rel = storage.relative_to(src, out_dir)
        if rel is not None:
            return rel
        if storage.is_url(src):
            return str(src)
        dest = storage.join(out_dir, "shards", f"{entry['sha256'][:12]}-{storage.name(src)}")
        if not storage.exists(dest):
            storage.put_file(storage.local(src), dest, move=False)
        return f"shards/{storage.name(dest)}"
    src = Path(os.path.abspath(base / entry["path"]))
    rel = os.path.relpath(src, os.path.abspath(out_dir))
    if rel != ".." and not rel.startswith("../"):
        return PurePosixPath(*Path(rel).parts).as_posix()
    dest = out_dir / "shards" / f"{entry['sha256'][:12]}-{src.name}"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except OSError:       # another file system, or links not allowed
            shutil.copy2(src, dest)
    return dest.relative_to(out_dir).as_posix()


def _header(manifest: dict, rows: list[dict]) -> dict:
    ids = {r["video_id"] for r in rows}
    return {"format": FORMAT, "schema_version": manifest.get("schema_version"), "source": manifest.get("source"),
            "pipeline": manifest.get("pipeline"), "versions": manifest.get("versions", {}),
            "members": manifest.get("members", {}),
            "sources": [s for s in manifest.get("sources", []) if s["video_id"] in ids]}


def _origin(path: str | Path) -> dict:
    return {"manifest": storage.name(path), "sha256": hashlib.sha256(storage.read_bytes(path)).hexdigest()}


def _table_name(out_path) -> str:
    return f"{storage.name(out_path).removesuffix('.json')}.samples.parquet"


def _files_of(manifest_path) -> set[str]:
    """A manifest, its tables and its shards beside it, as comparable locations (storage.key)."""
    manifest_path = storage.location(manifest_path)
    manifest = load_manifest(manifest_path)
    base = storage.parent(manifest_path)
    rels = [*manifest.get("tables", {}).values(), *(s["path"] for s in manifest["shards"] if not URL.match(s["path"]))]
    return {storage.key(manifest_path), *(storage.key(storage.join(base, r)) for r in rels)}


def check_out(out_path: str | Path, inputs: list[str | Path]):
    """Refuse an --out that would replace something a derived manifest must not: a file it is made from (an input
    manifest, its tables, its shards), a build's own manifest, or any file that is not a derived manifest."""
    out_path = storage.location(out_path)
    table = storage.join(storage.parent(out_path), _table_name(out_path))
    if not storage.name(out_path).endswith(".json"):
        raise ManifestError(f"--out {out_path}: a manifest is a .json file (e.g. {out_path}.json)")
    used = set().union(*(_files_of(p) for p in inputs))
    for path in (out_path, table):
        if storage.key(path) in used:
            raise ManifestError(f"--out {out_path} would overwrite {path}, which the input manifest uses; "
                                "choose another file name")
    if storage.is_dir(out_path):
        raise ManifestError(f"--out {out_path} is a folder; name the new manifest file, e.g. {out_path}/subset.json")
    if storage.exists(out_path):
        try:
            derived = load_manifest(out_path).get("manifest_version", 1) == 2
        except ManifestError:
            derived = False
        if not derived:
            raise ManifestError(f"--out {out_path} exists and is not a derived manifest (a build's own manifest or "
                                "another file); it is not replaced: choose another file name")
    elif storage.exists(table):
        raise ManifestError(f"--out {out_path}: {table} exists without its manifest; it is not replaced: "
                            "choose another file name or move that file")
    return out_path


def _write_derived(out_path: str | Path, parts: list[tuple[Path, dict, list[dict]]], header: dict,
                   derived: dict) -> dict:
    """A v2 manifest over [(folder, shard entry, kept rows)] and its samples table (check_out first)."""
    out_path = storage.location(out_path)
    out_dir = storage.parent(out_path)
    storage.makedirs(out_dir)
    shards: dict[str, dict] = {}
    table: list[dict] = []
    for base, entry, rows in parts:
        if not rows:
            continue
        rel = _place(base, entry, out_dir)
        shard = shards.setdefault(rel, {**{k: entry.get(k) for k in ("sha256", "samples", "bytes")}, "path": rel,
                                        "keys": []})
        shard["keys"] += [r["key"] for r in rows]
        table += [{**r, "shard": rel} for r in rows]
    table_name = _table_name(out_path)
    write_table(table, SAMPLES_SCHEMA, storage.join(out_dir, table_name))
    manifest = {**header, "manifest_version": 2, "derived": derived, "shards": list(shards.values()),
                "tables": {"samples": table_name},
                "counts": {"samples": len(table), "shards": len(shards), "videos": len({r["video_id"] for r in table}),
                           "hours": round(sum(r["duration"] for r in table) / 3600, 4)}}
    storage.write_json(out_path, manifest)
    return manifest


def filter_manifest(manifest_path: str | Path, where: str, out_path: str | Path) -> dict:
    """A v2 manifest at out_path over the same shards, keeping the rows where `where` holds. Rows where the
    expression raised are not kept; their count and the first reason are in derived["rows_failed"/"first_error"],
    and an expression that raised on every row is refused."""
    try:
        predicate = compile_where(where, SAMPLES_SCHEMA.names)
    except WhereError as err:
        raise ManifestError(f"--where {where!r}: {err}") from None
    check_out(out_path, [manifest_path])
    errors: Counter = Counter()

    def keep(row: dict) -> bool:
        try:
            return bool(predicate(row))
        except (TypeError, ZeroDivisionError, WhereError) as err:    # e.g. a missing value (None > 3)
            errors[f"{type(err).__name__}: {err}"] += 1
            return False

    manifest, base, parts = selection(manifest_path)
    kept = [(base, entry, [r for r in rows if keep(r)]) for entry, rows in parts]
    total, failed = sum(len(rows) for _, rows in parts), sum(errors.values())
    if total and failed == total:
        raise ManifestError(f"--where {where!r} could not be evaluated on any of the {total} rows "
                            f"({errors.most_common(1)[0][0]}); nothing written")
    derived = {"op": "filter", "where": where, "inputs": [_origin(manifest_path)], "rows_failed": failed,
               "first_error": errors.most_common(1)[0][0] if errors else None}
    return _write_derived(out_path, kept, _header(manifest, [r for *_, rs in kept for r in rs]), derived)


def _identity(identity: str) -> Callable[[dict], str]:
    """A samples-table row's identity: its `identity` column (video_id where the source names none), its video_id,
    or a regular expression over its video_id (group 1 if any)."""
    if identity == "identity":
        return lambda row: row.get("identity") or row["video_id"]
    if identity == "video_id":
        return lambda row: row["video_id"]
    try:
        pattern = re.compile(identity)
    except re.error as err:
        raise ManifestError(f"identity {identity!r} is neither 'identity', 'video_id' nor a regular expression: "
                            f"{err}") from None

    def group(row: dict) -> str:
        m = pattern.search(row["video_id"])
        if m is None:
            raise ManifestError(f"identity pattern {identity!r} does not match video_id {row['video_id']!r}")
        return m.group(1) if pattern.groups else m.group(0)
    return group


def split_manifest(manifest_path: str | Path, out_dir: str | Path | None = None, *, seed: str | int = SPLIT_SEED,
                   fractions: tuple[float, ...] = tuple(f for _, f in SPLIT_FRACTIONS),
                   names: tuple[str, ...] = tuple(n for n, _ in SPLIT_FRACTIONS),
                   identity: str = "identity") -> dict[str, list[str]]:
    """Identity-disjoint splits written as <out_dir>/<name>.json (default: beside the manifest). Each identity goes
    where `splits.split_of(identity, seed, fractions)` puts it: the rule the dataset adapters write into the
    samples' `split` column, so the default seed and fractions give exactly that column, and adding identities
    never moves one. The fractions hold per identity, so only approximately per sample (posetalk_data.splits)."""
    if len(fractions) != len(names):
        raise ManifestError(f"fractions {fractions}: give one per split {names}")
    try:
        check_fractions(list(zip(names, fractions)))
    except ValueError as err:
        raise ManifestError(str(err)) from None
    manifest, base, parts = selection(manifest_path)
    ident = _identity(identity)
    assign = {i: split_of(i, seed, list(zip(names, fractions))) for i in {ident(r) for _, rows in parts for r in rows}}
    out_dir = storage.location(out_dir) if out_dir is not None else base
    for name in names:
        check_out(storage.join(out_dir, f"{name}.json"), [manifest_path])
    result = {}
    for name in names:
        picked = [(base, entry, [r for r in rows if assign[ident(r)] == name]) for entry, rows in parts]
        derived = {"op": "split", "seed": seed, "fractions": list(fractions), "names": list(names), "split": name,
                   "identity": identity, "inputs": [_origin(manifest_path)]}
        written = _write_derived(storage.join(out_dir, f"{name}.json"), picked,
                                 _header(manifest, [r for *_, rs in picked for r in rs]), derived)
        result[name] = [k for s in written["shards"] for k in s["keys"]]
    return result


def feature_differences(a: dict, b: dict) -> dict[str, tuple]:
    """Versions that change the arrays (models, template, schema) that differ between two manifests."""
    va, vb = a.get("versions", {}), b.get("versions", {})
    diff = {k: (va.get(k), vb.get(k)) for k in FEATURE_VERSIONS if va.get(k) != vb.get(k)}
    if a.get("schema_version") != b.get("schema_version"):
        diff["schema_version"] = (a.get("schema_version"), b.get("schema_version"))
    return diff


def merge_manifests(paths: list[str | Path], out_path: str | Path, *, on_duplicate: str = "refuse",
                    allow_version_mismatch: bool = False) -> dict:
    """One v2 manifest over several. A key in more than one input is refused, or with on_duplicate="first" taken
    from the first input that has it. Inputs whose feature versions differ are refused unless allowed."""
    if on_duplicate not in ("refuse", "first"):
        raise ManifestError(f"on_duplicate must be 'refuse' or 'first', not {on_duplicate!r}")
    check_out(out_path, paths)
    loaded = [selection(p) for p in paths]
    first = loaded[0][0]
    for path, (m, _, _) in zip(paths[1:], loaded[1:]):
        diff = feature_differences(first, m)
        if diff and not allow_version_mismatch:
            raise ManifestError(f"{path}: feature versions differ from {paths[0]}: {diff}; "
                                "pass allow_version_mismatch to merge anyway")
    seen: dict[str, str] = {}
    duplicates, parts, rows_all = [], [], []
    for path, (_, base, chosen) in zip(paths, loaded):
        for entry, rows in chosen:
            kept = [r for r in rows if r["key"] not in seen]
            duplicates += [(r["key"], seen[r["key"]], str(path)) for r in rows if r["key"] in seen]
            seen.update({r["key"]: str(path) for r in kept})
            parts.append((base, entry, kept))
            rows_all += kept
    if duplicates and on_duplicate == "refuse":
        key, a, b = duplicates[0]
        raise ManifestError(f"{len(duplicates)} duplicate key(s), e.g. {key} in {a} and {b}; "
                            "on_duplicate='first' keeps the first input's sample")
    header, ids = _header(first, rows_all), {r["video_id"] for r in rows_all}
    header["sources"] = list({(s["video_id"], s["path"]): s for m, _, _ in loaded for s in m.get("sources", [])
                              if s["video_id"] in ids}.values())
    if any((m.get("source"), m.get("pipeline")) != (first.get("source"), first.get("pipeline")) for m, _, _ in loaded):
        header["source"] = header["pipeline"] = None     # no single recipe: rebuild refuses such a merge
    if any(m.get("versions") != first.get("versions") for m, _, _ in loaded):
        header["versions_by_input"] = [m.get("versions", {}) for m, _, _ in loaded]
    derived = {"op": "merge", "on_duplicate": on_duplicate, "duplicates_dropped": len(duplicates),
               "allow_version_mismatch": allow_version_mismatch, "inputs": [_origin(p) for p in paths]}
    return _write_derived(out_path, parts, header, derived)
