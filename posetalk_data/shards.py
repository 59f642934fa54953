"""Stage 8b, write: shard groups, their staging, then the tables and the manifest.

The driver plans the shard groups before any video is read (consecutive runs of the sorted source ids, see
WriteConfig). The task that finishes a group's last video writes the group's shard whole (its samples in key
order, fixed tar metadata: the same input gives the same bytes whatever order or node the work ran in) to a
temporary name, then renames or uploads it in one step, then stages the group's small record (shard entry,
sample rows, failures). A build killed at any point redoes exactly the groups without a record. The driver writes
the tables and the manifest (last) from the records. All of it goes through posetalk_data.storage, so OUT may be a
folder or an object-store URL.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .schema import QUALITY_COLUMNS, QUALITY_TEXT_COLUMNS, SCHEMA_VERSION, ClipRecord, VideoSpec

SHARD_PREFIX = "posetalk"
SAMPLES_SCHEMA = pa.schema(
    [("key", pa.string()), ("shard", pa.string()), ("source", pa.string()), ("video_id", pa.string()),
     ("source_path", pa.string()), ("start", pa.float64()), ("end", pa.float64()), ("frames", pa.int32()),
     ("duration", pa.float64()), ("flags", pa.list_(pa.string())), ("silent", pa.bool_()),
     ("identity", pa.string()), ("split", pa.string())]       # from dataset adapters; null for folders
    + [(c, pa.float64()) for c in QUALITY_COLUMNS] + [(c, pa.string()) for c in QUALITY_TEXT_COLUMNS])
FAILURES_SCHEMA = pa.schema(
    [("source", pa.string()), ("video_id", pa.string()), ("source_path", pa.string()), ("start", pa.float64()),
     ("end", pa.float64()), ("stage", pa.string()), ("reason", pa.string()),
     # video: a whole input dropped; clip: a face clip dropped after facetrack cut it; span: frames of a video that
     # no clip holds (a scene cut's trim, no face, too short, ...). Samples plus these rows cover every source.
     ("kind", pa.string())])


def sha256_file(path) -> str:
    """sha256 of a file at a path or URL."""
    return storage.sha256_of(path)


def relative_source(path: str, root) -> str:
    """Source paths are stored relative to the input folder (or URL) so that a manifest is portable."""
    if root is not None:
        rel = storage.relative_to(path, root)
        if rel is not None:
            return rel
    return storage.name(path)


class StagingMismatch(RuntimeError):
    """OUT holds staged clips of a different pipeline config or model versions."""


def _digest(*parts: object) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()[:16]


STAGING_DIR = ".staging"
STAGING_MARKER = "posetalk-staging.json"    # written first, so a staging is recognisable from the moment it exists
SHARD_FILE = re.compile(rf"{SHARD_PREFIX}-\d{{6}}\.tar(\.tmp)?")


def is_staging(folder) -> bool:
    """`folder` is a build's staging: its marker, a build.json of a staging made before the marker existed, or
    what a kill can leave before the marker is in place (an empty folder, or only the marker's temporary file)."""
    if not storage.is_dir(folder):
        return False
    names = set(storage.listdir(folder))
    return bool(names & {STAGING_MARKER, "build.json"}) or names <= {f"{STAGING_MARKER}.tmp"}


@dataclass(frozen=True)
class Group:
    """The videos whose samples go into one shard (planned before any is read)."""
    index: int
    specs: tuple[VideoSpec, ...]

    @property
    def shard(self) -> str:
        return f"shards/{SHARD_PREFIX}-{self.index:06d}.tar"

    @property
    def record_name(self) -> str:
        """The staged record's name: the group's number and its videos, so a changed plan never reuses it."""
        ids = [(s.source, s.video_id, s.start, s.end) for s in self.specs]
        return f"{self.index:06d}-{_digest(*ids)}.json"


def spec_order(spec: VideoSpec) -> tuple:
    return spec.source, spec.video_id, spec.start if spec.start is not None else -1.0, spec.end or 0.0


def plan_groups(specs: list[VideoSpec], videos_per_shard: int) -> list[Group]:
    """Consecutive runs of the sorted source ids: the same for any worker count and any finishing order."""
    ordered = sorted(specs, key=spec_order)
    return [Group(i, tuple(ordered[at:at + videos_per_shard]))
            for i, at in enumerate(range(0, len(ordered), videos_per_shard))]


class Staging:
    """What a build has finished, under OUT/.staging (a folder or a prefix of a store): one record per shard group
    (groups/<n>-<digest>.json: its shard entry, sample rows and failures), written after the group's shard."""

    def __init__(self, out):
        root = storage.join(out, STAGING_DIR)
        storage.makedirs(root)
        if not storage.is_file(storage.join(root, STAGING_MARKER)):
            storage.write_json(storage.join(root, STAGING_MARKER),
                               {"format": "posetalk-staging", "schema_version": SCHEMA_VERSION})
        self.out, self.groups_dir = out, storage.join(root, "groups")
        self.fingerprint_path = storage.join(root, "build.json")
        storage.makedirs(self.groups_dir)
        self.refresh()

    def refresh(self) -> None:
        """One listing of the staged records (on a store: one request, not one per group)."""
        self.finished = {n for n in storage.listdir(self.groups_dir) if n.endswith(".json")}

    def check_fingerprint(self, fingerprint: dict, *, partial: bool = False) -> None:
        """Staged clips are reused only by a build with the same config and versions (never mixed silently).
        partial: compare only the keys given (the config, before the workers report the model versions) and write
        nothing; the full fingerprint is written by the first build of OUT."""
        path = self.fingerprint_path
        if storage.is_file(path):
            before = storage.read_json(path)
            keys = set(fingerprint) if partial else set(before) | set(fingerprint)
            differs = sorted(k for k in keys if before.get(k) != fingerprint.get(k))
            if differs:
                raise StagingMismatch(
                    f"{self.out} holds clips staged with a different {', '.join(differs)}; "
                    "rerun with --fresh to discard them, or choose another --out")
        elif not partial:
            storage.write_json(path, fingerprint, indent=None)

    def done(self, group: Group) -> bool:
        return group.record_name in self.finished

    def record(self, group: Group) -> dict:
        return storage.read_json(storage.join(self.groups_dir, group.record_name))

    def forget_failed(self) -> int:
        """--retry-failed: groups with a failed video are done no more, so the next run processes them again;
        returns how many videos failed."""
        failed = 0
        for name in sorted(self.finished):
            record = storage.read_json(storage.join(self.groups_dir, name))
            videos = {f["video_id"] for f in record["failures"] if f.get("kind") != "span"}   # a span is no failure
            if videos:
                storage.remove(storage.join(self.groups_dir, name))
                failed += len(videos)
        self.refresh()
        return failed


def failure_row(record: ClipRecord, root) -> dict:
    stage, reason = next(iter(record.errors.items()))
    return {"source": record.spec.source, "video_id": record.spec.video_id,
            "source_path": relative_source(record.spec.path, root), "start": record.start or None,
            "end": record.end or None, "stage": stage, "reason": reason, "kind": record.meta.get("unit", "video")}


def sample_row(record: ClipRecord, shard: str, root) -> dict:
    meta = json.loads(record.members["meta.json"])
    quality = meta["quality"]
    return {"key": record.key, "shard": shard, "source": meta["source"], "video_id": meta["video_id"],
            "source_path": relative_source(record.spec.path, root),
            "start": meta["start"], "end": meta["end"], "frames": meta["frames"],
            "duration": meta["frames"] / meta["fps"], "flags": meta["flags"],
            "silent": bool(quality["silent"]),
            "identity": meta["extra"].get("identity"), "split": meta["extra"].get("split"),
            **{c: quality.get(c) for c in QUALITY_COLUMNS + QUALITY_TEXT_COLUMNS}}


def write_tar(final, samples) -> tuple[str, int]:
    """Write (key, {member: bytes}) samples as the shard `final` (a path or URL) whole: into a temporary file (beside
    it on this disk, else in the temp folder), then one rename or upload; returns (sha256, bytes). Fixed owner and
    mtime 0 (and webdataset's sorted members): the same samples give the same bytes."""
    from webdataset import TarWriter   # here, not at the top: webdataset imports torch (1.5 s for every command)

    if storage.is_url(final):
        handle, name = tempfile.mkstemp(prefix="posetalk-shard-", suffix=".tar")
        tmp = Path(name)
        stream = open(handle, "wb")
    else:
        tmp = storage.local(final).with_suffix(".tar.tmp")
        stream = open(tmp, "wb")
    with stream:
        writer = TarWriter(stream, user="posetalk", group="posetalk", mtime=0, encoder=False)
        for key, members in samples:
            writer.write({"__key__": key, **members})
        writer.close()
    digest, size = storage.sha256_of(tmp), tmp.stat().st_size
    storage.put_file(tmp, final)
    return digest, size


def write_group(out, root, group: Group, results: list) -> dict:
    """In the task that finished the group: its shard (if any sample was kept), then its staged record, which is
    returned (small: shard entry, sample rows, failures; no media)."""
    records = [r for result in results for r in result.records]
    kept = sorted((r for r in records if r.ok), key=lambda r: r.key)
    shard = None
    if kept:
        storage.makedirs(storage.join(out, "shards"))
        digest, size = write_tar(storage.join(out, group.shard), ((r.key, r.members) for r in kept))
        shard = {"path": group.shard, "sha256": digest, "samples": len(kept), "bytes": size,
                 "keys": [r.key for r in kept]}
    record = {"group": group.index, "videos": [s.video_id for s in group.specs], "shard": shard,
              "rows": [sample_row(r, group.shard, root) for r in kept],
              "failures": [failure_row(r, root) for r in records if not r.ok]}
    text = json.dumps(record, indent=None, sort_keys=False)
    storage.write_atomic(storage.join(out, STAGING_DIR, "groups", group.record_name), text)
    return json.loads(text)      # as a resumed build reads it back: the same manifest either way


def remove_stale_shards(out, shards: list[dict]) -> None:
    """Shard files of this build that its manifest no longer lists (an earlier plan's, a killed write's temporary
    file): only names this tool writes, in the build's own shards folder."""
    listed = {storage.name(s["path"]) for s in shards}
    for name in storage.listdir(storage.join(out, "shards")):
        if SHARD_FILE.fullmatch(name) and name not in listed:
            storage.remove(storage.join(out, "shards", name))


def write_table(rows: list[dict], schema: pa.Schema, dest) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    storage.write_atomic(dest, buffer.getvalue())


def write_outputs(records: list[dict], out, *, sources: list[dict], header: dict,
                  members: dict[str, str], skipped: list[dict] = ()) -> dict:
    """samples.parquet, failures.parquet and manifest.json (written last) from the groups' records (in group
    order); returns the manifest. `members`: what the samples hold (name -> description); `skipped`: failure
    rows for clips the source adapter left out before any processing."""
    shards = [r["shard"] for r in records if r["shard"]]
    rows = [row for r in records for row in r["rows"]]
    failures = sorted([*skipped, *(f for r in records for f in r["failures"])],
                      key=lambda r: (r["video_id"], r["start"] or 0.0))
    remove_stale_shards(out, shards)
    write_table(rows, SAMPLES_SCHEMA, storage.join(out, "samples.parquet"))
    write_table(failures, FAILURES_SCHEMA, storage.join(out, "failures.parquet"))
    manifest = {
        "format": "posetalk-shards", "schema_version": SCHEMA_VERSION, **header,
        "members": members,
        "counts": {"samples": len(rows), "shards": len(shards),
                   "failures": sum(f.get("kind") != "span" for f in failures),   # videos and clips dropped
                   "videos": len(sources), "hours": round(sum(r["duration"] for r in rows) / 3600, 4)},
        "shards": [{k: v for k, v in s.items() if k != "keys"} for s in shards],
        "sources": [{k: v for k, v in s.items() if k != "abs_path"} for s in sources],
        "tables": {"samples": "samples.parquet", "failures": "failures.parquet"},
    }
    from .dataset_card import card

    storage.write_atomic(storage.join(out, "README.md"), card(manifest))   # a Hugging Face dataset as it stands
    storage.write_json(storage.join(out, "manifest.json"), manifest)
    return manifest
