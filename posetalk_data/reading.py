"""Safe reading of manifests and shards: the one place that opens a manifest, its tables and its tar files.

Manifests are JSON only. A manifest may be a path or an object-store URL (s3://, gs://, ...; read through
posetalk_data.storage): its shard and table paths are relative to it, so a build in a bucket is shared by its
manifest's URL. Shard and table paths must be relative POSIX paths without `..` (shards may also be http(s), s3 or
gs URLs, never file:// or an absolute path); this is checked on the text, before any file is opened. Shards are read with `tarfile` in stream
mode: a member that is not a regular file (link, device, directory) or whose name is absolute or has a `..` part is
refused (UnsafeShardError); nothing is unpickled or executed. A samples-table row is only ever used through the
shard entry of the manifest it names (`selection`), so a path written into the table cannot open another file.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
import urllib.request
from collections import defaultdict
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage

FORMAT = "posetalk-shards"
URL = re.compile(r"^(https?|s3|gs|gcs)://")     # shard entries that name their own location


class ManifestError(ValueError):
    """Not a posetalk manifest, an unsafe path, or an operation refused (duplicates, version mismatch)."""


class UnsafeShardError(ValueError):
    """A shard member that could write outside a folder if extracted, or is not a plain file."""


def check_relative(path: str, what: str) -> str:
    """Lexical check (no file access): relative, POSIX, no '..', no drive letter."""
    if not isinstance(path, str) or not path or "\\" in path or PurePosixPath(path).is_absolute() \
            or ".." in PurePosixPath(path).parts or re.match(r"^[A-Za-z]:", path):
        raise ManifestError(f"{what} path {path!r} is absolute or escapes the manifest's folder")
    return path


def manifest_location(path: str | Path) -> str | Path:
    """A manifest file's location (a Path, or the URL text: Path would turn s3://b into s3:/b)."""
    return storage.location(path)


def load_manifest(path: str | Path) -> dict:
    path = manifest_location(path)
    try:
        manifest = json.loads(storage.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not JSON ({err})") from None
    except IsADirectoryError:
        raise ManifestError(f"{path} is a folder, not a manifest file") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {path} not found") from None
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
    tables = manifest.get("tables", {})
    if not isinstance(tables, dict):
        raise ManifestError(f"{path}: 'tables' is not a mapping")
    for table in tables.values():
        check_relative(table, "table")
    return manifest


def shard_location(base: str | Path, rel: str) -> str | Path:
    """Where a shard entry's file is: its own URL, or relative to the manifest's folder (or URL)."""
    return rel if URL.match(rel) else storage.join(base, rel)


def open_shard(base: str | Path, rel: str) -> BinaryIO:
    if re.match(r"^https?://", rel):
        return urllib.request.urlopen(rel)
    return storage.open_read(shard_location(base, rel))


def _check_member(info: tarfile.TarInfo) -> None:
    name = PurePosixPath(info.name)
    if name.is_absolute() or ".." in name.parts or "\\" in info.name:
        raise UnsafeShardError(f"member {info.name!r} is absolute or escapes the folder")
    if not info.isreg():
        raise UnsafeShardError(f"member {info.name!r} is not a regular file (link, device or directory)")


def _member_key(info: tarfile.TarInfo) -> str:
    """The sample key of a checked member: its name up to the first dot of the base name."""
    _check_member(info)
    m = re.fullmatch(r"((?:.*/)?[^./]+)\.([^/]+)", info.name)
    if m is None:
        raise UnsafeShardError(f"member {info.name!r} is not <key>.<member>")
    return m[1]


def _sample_count(path) -> int:
    """Samples in a tar, from its member headers alone (the data is skipped, not read: on a store, ranges)."""
    with storage.open_read(path) as stream, tarfile.open(fileobj=stream, mode="r:*") as archive:
        keys = [_member_key(info) for info in archive]
    return sum(1 for i, key in enumerate(keys) if i == 0 or key != keys[i - 1])


_checked: set[tuple] = set()   # shards already found as listed, by (path, size, mtime or ETag): re-reads are free


def check_shards(manifest_path: str | Path, manifest: dict | None = None) -> None:
    """Every shard a manifest lists beside it (on disk or in its store) has the size in bytes and the number of
    samples it records (cheap: a stat and the tar's headers; the sha256 is for `posetalk-data manifest verify`).
    ManifestError naming the first shard that differs: a shard cut short, even at a sample boundary, would otherwise
    be read as a smaller dataset."""
    manifest_path = manifest_location(manifest_path)
    for entry in (manifest or load_manifest(manifest_path))["shards"]:
        check_shard(manifest_path, entry)


def check_shard(manifest_path: str | Path, entry: dict) -> None:
    """check_shards for one shard entry (shards naming their own URL are not checked)."""
    rel = entry["path"]
    if URL.match(rel):
        return
    path = storage.join(storage.parent(manifest_location(manifest_path)), rel)
    hint = f"`posetalk-data manifest verify {manifest_path}` lists every problem; rebuild or restore the shard"
    try:
        signature = storage.signature(path)
    except FileNotFoundError:
        raise ManifestError(f"shard {path} is missing ({hint})") from None
    if not storage.is_file(path):
        raise ManifestError(f"shard {path} is missing ({hint})")
    if signature in _checked:
        return
    size = signature[1]
    if entry.get("bytes") is not None and size != entry["bytes"]:
        raise ManifestError(f"shard {path} has {size} bytes, the manifest says {entry['bytes']} "
                            f"({'cut short' if size < entry['bytes'] else 'changed'}; {hint})")
    try:
        count = _sample_count(path)
    except (tarfile.TarError, UnsafeShardError, EOFError) as err:
        raise ManifestError(f"shard {path} is not a readable shard ({err}; {hint})") from None
    if entry.get("samples") is not None and count != entry["samples"]:
        raise ManifestError(f"shard {path} holds {count} samples, the manifest says {entry['samples']} ({hint})")
    _checked.add(signature)


def safe_samples(tar: str | Path | BinaryIO, keys: set[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {member: bytes}) per sample in shard order, webdataset's grouping (key = name up to the first dot of
    the base name); `keys` limits which samples are read into memory. Raises UnsafeShardError, tarfile.TarError."""
    stream = storage.open_read(tar) if isinstance(tar, (str, Path)) else tar
    with closing(stream), tarfile.open(fileobj=stream, mode="r|*") as archive:
        key, sample = None, {}
        for info in archive:
            name = _member_key(info)
            if name != key:
                if key is not None and (keys is None or key in keys):
                    yield key, sample
                key, sample = name, {}
            if keys is None or key in keys:
                sample[info.name[len(key) + 1:]] = archive.extractfile(info).read()
        if key is not None and (keys is None or key in keys):
            yield key, sample


def read_table(manifest_path: str | Path, manifest: dict, name: str = "samples") -> list[dict]:
    """Rows of one of the manifest's tables (its path checked by load_manifest); ManifestError when unreadable."""
    table = manifest.get("tables", {}).get(name)
    if not table:
        raise ManifestError(f"{manifest_path}: no {name} table")
    try:
        data = storage.read_bytes(storage.join(storage.parent(manifest_location(manifest_path)), table))
        return pq.read_table(io.BytesIO(data)).to_pylist()
    except (OSError, pa.ArrowException) as err:
        raise ManifestError(f"{manifest_path}: {name} table {table} unreadable ({err})") from None


def selection(manifest_path: str | Path) -> tuple[dict, str | Path, list[tuple[dict, list[dict]]]]:
    """(manifest, its folder or URL, [(shard entry, samples-table rows of its selected keys)]). Rows naming a shard
    the manifest does not list are left out: the table never decides which file is opened."""
    manifest_path = manifest_location(manifest_path)
    manifest, base = load_manifest(manifest_path), storage.parent(manifest_path)
    by_shard = defaultdict(list)
    for row in read_table(manifest_path, manifest):
        by_shard[row["shard"]].append(row)
    parts = []
    for entry in manifest["shards"]:
        wanted = set(entry["keys"]) if "keys" in entry else None
        parts.append((entry, [r for r in by_shard[entry["path"]] if wanted is None or r["key"] in wanted]))
    return manifest, base, parts


def read_samples(manifest_path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Every sample of a manifest (honouring per-shard "keys"), read with the safe reader; each shard is first
    checked against the manifest's counts (check_shard)."""
    manifest_path = manifest_location(manifest_path)
    for entry in load_manifest(manifest_path)["shards"]:
        keys = set(entry["keys"]) if "keys" in entry else None
        check_shard(manifest_path, entry)
        yield from safe_samples(open_shard(storage.parent(manifest_path), entry["path"]), keys)
