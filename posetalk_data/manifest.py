"""Manifest tools: load safely, verify, stats, filter, split, merge, rebuild, compare (they return data; the CLI
prints it).

Manifest format. Version 1 (what `build` writes; no "manifest_version" key): every sample of every listed shard
belongs to the dataset. Version 2 ("manifest_version": 2, what filter/split/merge write): every shard entry also
carries "keys", the subset of that shard's samples in this dataset ("samples" stays the shard's own sample count,
which verify checks the tar against). A v2 manifest has its own table `<stem>.samples.parquet` beside it (its
`shard` column relative to it), counts recomputed over its keys, no failures table, and "derived": {op, arguments,
inputs: [{manifest: file name, sha256}]}. Derived manifests never rewrite shards: they point at the same tar files.
A shard outside the new manifest's folder is hard-linked (copied across file systems) into
`<folder>/shards/<sha256[:12]>-<name>`, so every path stays inside the dataset folder.

Safety. Manifests are JSON only. Shard and table paths must be relative POSIX paths without `..` (shards may also
be http(s) URLs); this is checked on the text, before any file is opened. Shards are read with `tarfile` in stream
mode: a member that is not a regular file (link, device, directory) or whose name is absolute or has a `..` part is
refused (UnsafeShardError); .npy members are loaded with allow_pickle=False; nothing is unpickled or executed.

`where` (filter): a small whitelist over Python's `ast`, evaluated per row of samples.parquet: column names,
literals, lists, comparisons (== != < <= > >= in, not in), and/or/not, + - * /, len() and abs(). Anything else
(attributes, subscripts, other calls, unknown columns) is refused. A row where the expression fails on a missing
value (None > 3) is not kept. Example: `video_id in ['a', 'b'] and pose_fit_rms < 0.02 and 'small_face' not in flags`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import urllib.request
from contextlib import closing
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import MEMBERS, VideoSpec
from .shards import SAMPLES_SCHEMA
from .where import WhereError, compile_where

FORMAT = "posetalk-shards"
URL = re.compile(r"^https?://")
FEATURE_VERSIONS = ("face_detector", "face_mesh", "landmarks", "face_template")   # what changes the arrays
LAYER_VERSIONS = {"video.mp4": ("face_detector", "ffmpeg"), "audio.flac": ("ffmpeg",),
                  "landmarks.npy": ("face_mesh", "landmarks"), "pose.npy": ("face_mesh", "landmarks", "face_template"),
                  "gaze.npy": ("face_mesh",), "meta.json": ("posetalk",)}


class ManifestError(ValueError):
    """Not a posetalk manifest, an unsafe path, or an operation refused (duplicates, version mismatch)."""


class UnsafeShardError(ValueError):
    """A shard member that could write outside a folder if extracted, or is not a plain file."""


@dataclass(frozen=True)
class Problem:
    shard: str
    key: str | None
    what: str        # missing, size, checksum, unreadable, unsafe, count, missing_sample, members, array, table
    detail: str


# --- loading and reading ---------------------------------------------------------------------------------------

def check_relative(path: str, what: str) -> str:
    """Lexical check (no file access): relative, POSIX, no '..', no drive letter."""
    if not isinstance(path, str) or not path or "\\" in path or PurePosixPath(path).is_absolute() \
            or ".." in PurePosixPath(path).parts or re.match(r"^[A-Za-z]:", path):
        raise ManifestError(f"{what} path {path!r} is absolute or escapes the manifest's folder")
    return path


def load_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("shards"), list):
        raise ManifestError(f"{path}: not a posetalk manifest (format {FORMAT!r} with a list of shards)")
    if manifest.get("manifest_version", 1) not in (1, 2):
        raise ManifestError(f"{path}: manifest_version {manifest['manifest_version']} is newer than this tool")
    for shard in manifest["shards"]:
        if not isinstance(shard, dict) or not isinstance(shard.get("keys", []), list):
            raise ManifestError(f"{path}: shard entry {shard!r} is not {{path, sha256, samples, bytes[, keys]}}")
        if not URL.match(str(shard.get("path", ""))):
            check_relative(shard.get("path"), "shard")
    for table in manifest.get("tables", {}).values():
        check_relative(table, "table")
    return manifest


def open_shard(base: Path, rel: str) -> BinaryIO:
    return urllib.request.urlopen(rel) if URL.match(rel) else open(base / rel, "rb")


def _check_member(info: tarfile.TarInfo) -> None:
    name = PurePosixPath(info.name)
    if name.is_absolute() or ".." in name.parts or "\\" in info.name:
        raise UnsafeShardError(f"member {info.name!r} is absolute or escapes the folder")
    if not info.isreg():
        raise UnsafeShardError(f"member {info.name!r} is not a regular file (link, device or directory)")


def safe_samples(tar: str | Path | BinaryIO, keys: set[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {member: bytes}) per sample in shard order, webdataset's grouping (key = name up to the first dot of
    the base name); `keys` limits which samples are read into memory. Raises UnsafeShardError, tarfile.TarError."""
    stream = open(tar, "rb") if isinstance(tar, (str, Path)) else tar
    with closing(stream), tarfile.open(fileobj=stream, mode="r|*") as archive:
        key, sample = None, {}
        for info in archive:
            _check_member(info)
            m = re.fullmatch(r"((?:.*/)?[^./]+)\.([^/]+)", info.name)
            if m is None:
                raise UnsafeShardError(f"member {info.name!r} is not <key>.<member>")
            if m[1] != key:
                if key is not None and (keys is None or key in keys):
                    yield key, sample
                key, sample = m[1], {}
            if keys is None or key in keys:
                sample[m[2]] = archive.extractfile(info).read()
        if key is not None and (keys is None or key in keys):
            yield key, sample


def _selection(manifest_path: str | Path) -> tuple[dict, Path, list[tuple[dict, list[dict]]]]:
    """(manifest, its folder, [(shard entry, samples-table rows of its selected keys)])."""
    manifest_path = Path(manifest_path)
    manifest, base = load_manifest(manifest_path), manifest_path.parent
    table = manifest.get("tables", {}).get("samples")
    if not table:
        raise ManifestError(f"{manifest_path}: no samples table")
    by_shard = defaultdict(list)
    for row in pq.read_table(base / table).to_pylist():
        by_shard[row["shard"]].append(row)
    parts = []
    for entry in manifest["shards"]:
        wanted = set(entry["keys"]) if "keys" in entry else None
        parts.append((entry, [r for r in by_shard[entry["path"]] if wanted is None or r["key"] in wanted]))
    return manifest, base, parts


def read_samples(manifest_path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Every sample of a manifest (honouring per-shard "keys"), read with the safe reader."""
    manifest_path = Path(manifest_path)
    for entry in load_manifest(manifest_path)["shards"]:
        keys = set(entry["keys"]) if "keys" in entry else None
        yield from safe_samples(open_shard(manifest_path.parent, entry["path"]), keys)


# --- verify -----------------------------------------------------------------------------------------------------

class _Hashing:
    """Hashes what tarfile reads, so a shard (or URL) is read once for both its checksum and its samples."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.digest = stream, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.digest.update(data)
        return data

    def close(self) -> None:
        while self.read(1 << 20):    # hash what tarfile left unread (padding, or bytes after a broken header)
            pass
        self.stream.close()


def check_sample(sample: dict[str, bytes]) -> list[tuple[str, str]]:
    """(what, detail) for members the schema promises but the sample lacks, and arrays whose T or shape is off."""
    missing = sorted(set(MEMBERS) - set(sample))
    problems = [("members", f"missing {', '.join(missing)}")] if missing else []
    try:
        frames = json.loads(sample["meta.json"])["frames"]
    except (KeyError, ValueError, TypeError) as err:
        return problems + [("members", f"meta.json unreadable or without frames: {err!r}")]
    for name, (_, spec, _) in MEMBERS.items():
        if not name.endswith(".npy") or name not in sample:
            continue
        dtype, dims = re.fullmatch(r"(\w+)\[(.*)\]", spec).groups()
        try:
            arr = np.load(io.BytesIO(sample[name]), allow_pickle=False)
        except (ValueError, EOFError, OSError) as err:
            problems.append(("array", f"{name}: unreadable ({err})"))
            continue
        want = [frames if d == "T" else int(d) if d.isdigit() else None for d in dims.split(",")]
        if str(arr.dtype) != dtype or arr.ndim != len(want) or any(w not in (None, s) for w, s in zip(want, arr.shape)):
            problems.append(("array", f"{name}: {arr.dtype}{list(arr.shape)}, expected {spec} with T={frames}"))
    return problems


def verify_shard(base: Path, entry: dict, expected: list[str] | None) -> list[Problem]:
    rel = entry["path"]
    out: list[Problem] = []
    if not URL.match(rel):
        if not (base / rel).is_file():
            return [Problem(rel, None, "missing", f"{base / rel} does not exist")]
        size = (base / rel).stat().st_size
        if size != entry.get("bytes"):
            out.append(Problem(rel, None, "size", f"{size} bytes, manifest says {entry.get('bytes')}"
                                                  + (" (truncated)" if size < (entry.get("bytes") or 0) else "")))
    seen: list[str] = []
    try:
        hashing = _Hashing(open_shard(base, rel))    # safe_samples closes it, which hashes the rest
    except OSError as err:                            # an unreachable URL
        return out + [Problem(rel, None, "missing", str(err))]
    try:
        for key, sample in safe_samples(hashing):
            seen.append(key)
            out += [Problem(rel, key, what, detail) for what, detail in check_sample(sample)]
    except UnsafeShardError as err:
        out.append(Problem(rel, None, "unsafe", str(err)))
    except (tarfile.TarError, EOFError, OSError) as err:
        out.append(Problem(rel, None, "unreadable", f"{type(err).__name__}: {err}"))
    if hashing.digest.hexdigest() != entry.get("sha256"):
        out.append(Problem(rel, None, "checksum", f"sha256 {hashing.digest.hexdigest()[:16]}… differs from manifest"))
    if len(seen) != entry.get("samples"):
        out.append(Problem(rel, None, "count", f"{len(seen)} samples read, manifest says {entry.get('samples')}"))
    out += [Problem(rel, k, "missing_sample", "listed but not in the shard")
            for k in sorted(set(expected or []) - set(seen))]
    return out


def verify(manifest_path: str | Path) -> list[Problem]:
    """Every problem found; an empty list means the dataset is intact. Raises ManifestError for a bad manifest."""
    manifest_path = Path(manifest_path)
    manifest, base = load_manifest(manifest_path), manifest_path.parent
    try:
        expected = {entry["path"]: [r["key"] for r in rows] for entry, rows in _selection(manifest_path)[2]}
        problems = []
    except (ManifestError, OSError, pa.ArrowException) as err:
        expected, problems = {}, [Problem("", None, "table", f"samples table unreadable: {err}")]
    for entry in manifest["shards"]:
        problems += verify_shard(base, entry, entry.get("keys", expected.get(entry["path"])))
    return problems


# --- stats ------------------------------------------------------------------------------------------------------

def _describe(values: list) -> dict:
    arr = np.array([v for v in values if v is not None], dtype=float)
    if not arr.size:
        return {"missing": len(values)}
    q = map(float, np.percentile(arr, [0, 5, 50, 95, 100]))
    return {**dict(zip(("min", "p05", "median", "p95", "max"), q)), "mean": float(arr.mean()),
            "missing": len(values) - int(arr.size)}


def layers(manifest: dict) -> dict:
    versions = manifest.get("versions", {})
    # feature layers (mel.npy, minilm.npy, ...) have their versions under their own member name
    return {member: {"description": desc, "versions": {k: versions[k] for k in LAYER_VERSIONS.get(member, (member,))
                                                        if k in versions}}
            for member, desc in manifest.get("members", {}).items()}


def stats(manifest_path: str | Path) -> dict:
    manifest, _, parts = _selection(manifest_path)
    rows = [r for _, rs in parts for r in rs]
    numeric = [f.name for f in SAMPLES_SCHEMA if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    has_failures = "failures" in manifest.get("tables", {})     # derived manifests carry no failures table
    return {"manifest_version": manifest.get("manifest_version", 1),
            "counts": {"samples": len(rows), "shards": sum(1 for _, rs in parts if rs),
                       "videos": len({r["video_id"] for r in rows}),
                       "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
                       "failures": manifest.get("counts", {}).get("failures") if has_failures else None},
            "sources": dict(Counter(r["source"] for r in rows)),
            "flags": dict(Counter(f for r in rows for f in r["flags"] or [])),
            "silent": sum(bool(r["silent"]) for r in rows),
            "columns": {c: _describe([r[c] for r in rows]) for c in numeric},
            "layers": layers(manifest), "versions": manifest.get("versions", {}), "pipeline": manifest.get("pipeline")}


# --- derived manifests: filter, split, merge --------------------------------------------------------------------

def _place(base: Path, entry: dict, out_dir: Path) -> str:
    """The shard's path relative to out_dir; a shard outside it is linked (or copied) in, never referenced via '..'."""
    if URL.match(entry["path"]):
        return entry["path"]
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
    return {"manifest": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _write_derived(out_path: str | Path, parts: list[tuple[Path, dict, list[dict]]], header: dict,
                   derived: dict) -> dict:
    """A v2 manifest over [(folder, shard entry, kept rows)] and its samples table."""
    out_path = Path(out_path)
    out_dir = out_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
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
    table_name = f"{out_path.name.removesuffix('.json')}.samples.parquet"
    pq.write_table(pa.Table.from_pylist(table, schema=SAMPLES_SCHEMA), out_dir / table_name)
    manifest = {**header, "manifest_version": 2, "derived": derived, "shards": list(shards.values()),
                "tables": {"samples": table_name},
                "counts": {"samples": len(table), "shards": len(shards), "videos": len({r["video_id"] for r in table}),
                           "hours": round(sum(r["duration"] for r in table) / 3600, 4)}}
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out_path)
    return manifest


def filter_manifest(manifest_path: str | Path, where: str, out_path: str | Path) -> dict:
    """A v2 manifest at out_path over the same shards, keeping the rows where `where` holds."""
    try:
        predicate = compile_where(where, SAMPLES_SCHEMA.names)
    except WhereError as err:
        raise ManifestError(f"--where {where!r}: {err}") from None

    def keep(row: dict) -> bool:
        try:
            return bool(predicate(row))
        except (TypeError, ZeroDivisionError):     # a missing value: the row is not kept
            return False

    manifest, base, parts = _selection(manifest_path)
    kept = [(base, entry, [r for r in rows if keep(r)]) for entry, rows in parts]
    return _write_derived(out_path, kept, _header(manifest, [r for *_, rs in kept for r in rs]),
                          {"op": "filter", "where": where, "inputs": [_origin(manifest_path)]})


def _identity(identity: str) -> Callable[[str], str]:
    if identity == "video_id":
        return lambda vid: vid
    try:
        pattern = re.compile(identity)
    except re.error as err:
        raise ManifestError(f"identity {identity!r} is neither 'video_id' nor a regular expression: {err}") from None

    def group(vid: str) -> str:
        m = pattern.search(vid)
        if m is None:
            raise ManifestError(f"identity pattern {identity!r} does not match video_id {vid!r}")
        return m.group(1) if pattern.groups else m.group(0)
    return group


def split_manifest(manifest_path: str | Path, out_dir: str | Path | None = None, *, seed: int,
                   fractions: tuple[float, ...] = (0.8, 0.1, 0.1), names: tuple[str, ...] = ("train", "val", "test"),
                   identity: str = "video_id") -> dict[str, list[str]]:
    """Identity-disjoint splits written as <out_dir>/<name>.json (default: beside the manifest). Identities are
    ordered by sha256(seed, identity) and laid along [0, 1) by sample count; each goes to the split whose fraction
    interval holds its midpoint. The same seed and samples give the same split on any machine."""
    if len(fractions) != len(names) or min(fractions) < 0 or sum(fractions) <= 0:
        raise ManifestError(f"fractions {fractions} must be one non-negative number per split {names}")
    manifest, base, parts = _selection(manifest_path)
    ident = _identity(identity)
    counts = Counter(ident(r["video_id"]) for _, rows in parts for r in rows)
    order = sorted(counts, key=lambda i: hashlib.sha256(f"{seed}\0{i}".encode()).hexdigest())
    bounds, total, done, assign = np.cumsum(fractions) / sum(fractions), sum(counts.values()), 0, {}
    for i in order:
        at = int(np.searchsorted(bounds, (done + counts[i] / 2) / total, side="right"))
        assign[i], done = names[min(at, len(names) - 1)], done + counts[i]
    out_dir = Path(out_dir) if out_dir is not None else Path(manifest_path).parent
    result = {}
    for name in names:
        picked = [(base, entry, [r for r in rows if assign[ident(r["video_id"])] == name]) for entry, rows in parts]
        derived = {"op": "split", "seed": seed, "fractions": list(fractions), "names": list(names), "split": name,
                   "identity": identity, "inputs": [_origin(manifest_path)]}
        written = _write_derived(out_dir / f"{name}.json", picked,
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
    loaded = [_selection(p) for p in paths]
    first = loaded[0][0]
    for path, (m, _, _) in zip(paths[1:], loaded[1:]):
        diff = feature_differences(first, m)
        if diff and not allow_version_mismatch:
            raise ManifestError(f"{path}: feature versions differ from {paths[0]}: {diff}; "
                                "pass allow_version_mismatch to merge anyway")
    seen: dict[str, str] = {}
    duplicates, parts, rows_all = [], [], []
    for path, (_, base, selection) in zip(paths, loaded):
        for entry, rows in selection:
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


# --- rebuild and compare ----------------------------------------------------------------------------------------

def member_hashes(manifest_path: str | Path) -> dict[str, dict[str, str]]:
    return {key: {name: hashlib.sha256(data).hexdigest() for name, data in sample.items()}
            for key, sample in read_samples(manifest_path)}


def compare(manifest_a: str | Path, manifest_b: str | Path, *, only_keys_of_a: bool = False) -> dict:
    """Keys only in one side, and per differing key the members whose bytes differ."""
    a, b = member_hashes(manifest_a), member_hashes(manifest_b)
    if only_keys_of_a:
        b = {k: v for k, v in b.items() if k in a}
    differing = {k: sorted(m for m in a[k].keys() | b[k].keys() if a[k].get(m) != b[k].get(m))
                 for k in sorted(a.keys() & b.keys())}
    return {"only_in_a": sorted(a.keys() - b.keys()), "only_in_b": sorted(b.keys() - a.keys()),
            "differing": {k: v for k, v in differing.items() if v}, "same": sum(not v for v in differing.values())}


def _rebuild_specs(manifest: dict, input_root: Path | None, out_dir: Path) -> tuple[list[VideoSpec], Path, list]:
    """(specs, root, [sources missing or of another size than recorded]) from the manifest's source list."""
    src, sources = manifest.get("source"), manifest.get("sources", [])
    if src == "folder":
        if input_root is None:
            raise ManifestError("rebuilding a folder build needs input_root (the folder its source paths are under)")
        specs = [VideoSpec(source="folder", video_id=s["video_id"], start=s.get("start"), end=s.get("end"),
                           path=str(input_root / check_relative(s["path"], "source"))) for s in sources]
        root = input_root
    else:      # other adapters (demo, datasets) list their videos again; keep the manifest's ones
        from .sources import source_specs

        try:
            specs, root = source_specs(src, input_root, out_dir)
        except ValueError as err:
            raise ManifestError(f"cannot rebuild source {src!r}: {err}") from None
        specs = [s for s in specs if s.video_id in {r["video_id"] for r in sources}]
    recorded, found = {s["video_id"]: s.get("bytes") for s in sources}, {s.video_id for s in specs}
    changed = [{"video_id": v, "why": "not listed by the source"} for v in recorded if v not in found]
    for spec in specs:
        path = Path(spec.path)
        if not path.is_file() or path.stat().st_size != recorded.get(spec.video_id):
            changed.append({"video_id": spec.video_id, "why": "missing" if not path.is_file() else "size differs"})
    return specs, root, changed


def rebuild(manifest_path: str | Path, out_dir: str | Path, *, input_root: str | Path | None = None,
            workers: int | None = 0) -> dict:
    """Build the manifest's sources again with its pipeline config into out_dir, then compare the samples
    (restricted to the manifest's keys). Returns compare()'s dict plus sources_changed and the new manifest path."""
    from .build import build
    from .config import PipelineConfig

    manifest, out_dir = load_manifest(manifest_path), Path(out_dir)
    if not manifest.get("pipeline"):
        raise ManifestError(f"{manifest_path}: no single pipeline config to rebuild from (a merge of different builds)")
    cfg = PipelineConfig.model_validate(manifest["pipeline"])
    specs, root, changed = _rebuild_specs(manifest, Path(input_root) if input_root else None, out_dir)
    build(specs, out_dir, cfg, source=manifest["source"], root=root, workers=workers)
    report = compare(manifest_path, out_dir / "manifest.json", only_keys_of_a=True)
    return {**report, "sources_changed": changed, "rebuilt": str(out_dir / "manifest.json")}
