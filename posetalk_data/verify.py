"""`manifest verify`: is a build (or a manifest derived from one) intact?

Every listed shard is present, has the recorded size, sha256 and sample count, and reads safely; every sample has
the members the schema promises with the right dtypes and T rows; and the samples table agrees with the shards:
each row names a listed shard and a sample in it, each sample has exactly one row, and the counts add up.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import storage
from .reading import (URL, ManifestError, UnsafeShardError, load_manifest, open_shard, read_table, safe_samples,
                      shard_location)
from .pipeline import MEMBERS


@dataclass(frozen=True)
class Problem:
    shard: str
    key: str | None
    what: str        # missing, size, checksum, unreadable, unsafe, count, missing_sample, members, array, table
    detail: str


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
    for name, member in MEMBERS.items():
        if not member.array_dtype or name not in sample:
            continue
        spec = member.dtype
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


def shard_checksum(base, entry: dict) -> str | None:
    """The sha256 of a listed shard's bytes as they are now (None when it cannot be read)."""
    try:
        hashing = _Hashing(open_shard(base, entry["path"]))
    except OSError:
        return None
    hashing.close()
    return hashing.digest.hexdigest()


def verify_shard(base, entry: dict, table_keys: list[str] | None) -> list[Problem]:
    """Problems of one shard (beside the manifest on disk or in a store). table_keys: the samples-table rows' keys
    for it (None: the table was unreadable)."""
    rel = entry["path"]
    out: list[Problem] = []
    if not URL.match(rel):
        where = shard_location(base, rel)
        if not storage.is_file(where):
            return [Problem(rel, None, "missing", f"{where} does not exist")]
        size = storage.size(where)
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
    selected = entry.get("keys", seen)      # v2: the manifest's keys for this shard; v1: every sample in it
    out += [Problem(rel, k, "missing_sample", "listed but not in the shard") for k in sorted(set(selected) - set(seen))]
    if table_keys is not None:
        out += [Problem(rel, k, "table", "selected sample without a row in the samples table")
                for k in sorted(set(selected) - set(table_keys))]
        out += [Problem(rel, k, "table", "samples-table row for a sample the manifest does not select")
                for k in sorted(set(table_keys) - set(selected)) if k in seen]
        out += [Problem(rel, k, "missing_sample", "in the samples table but not in the shard")
                for k in sorted(set(table_keys) - set(seen) - set(selected))]
    return out


def table_problems(manifest: dict, rows: list[dict]) -> list[Problem]:
    """Rows naming a shard the manifest does not list, keys with several rows, and a count that disagrees."""
    listed = {s["path"] for s in manifest["shards"]}
    out = [Problem(str(r["shard"]), r["key"], "table", "samples-table row names a shard the manifest does not list")
           for r in rows if r["shard"] not in listed]
    out += [Problem("", key, "table", f"{n} rows in the samples table") for key, n in
            sorted(Counter(r["key"] for r in rows).items()) if n > 1]
    counted = manifest.get("counts", {}).get("samples")
    if counted is not None and counted != len(rows):
        out.append(Problem("", None, "table", f"the samples table has {len(rows)} rows, the manifest counts {counted}"))
    return out


def verify(manifest_path: str | Path) -> list[Problem]:
    """Every problem found; an empty list means the dataset is intact. Raises ManifestError for a bad manifest."""
    manifest_path = storage.location(manifest_path)
    manifest, base = load_manifest(manifest_path), storage.parent(manifest_path)
    try:
        rows = read_table(manifest_path, manifest)
    except ManifestError as err:
        rows, problems = None, [Problem("", None, "table", str(err))]
    else:
        problems = table_problems(manifest, rows)
    for entry in manifest["shards"]:
        keys = None if rows is None else [r["key"] for r in rows if r["shard"] == entry["path"]]
        problems += verify_shard(base, entry, keys)
    return problems
