"""Stage 8b, write: staging of finished samples, then shards, tables and the manifest.

Workers' samples are staged one directory per key (written to a temporary name, then renamed). At the end the
driver writes the shards from the staged samples in key order, with fixed tar metadata, so the same input gives
the same shards byte for byte whatever order the workers finished in.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from .schema import MEMBERS, SCHEMA_VERSION, ClipRecord

SHARD_PREFIX = "posetalk"
QUALITY_COLUMNS = ["face_present_fraction", "landmark_confidence", "landmarks_found_fraction", "pose_fit_rms",
                   "yaw_range", "pitch_range", "roll_range", "face_size_px", "crop_source_px", "audio_dbfs"]
SAMPLES_SCHEMA = pa.schema(
    [("key", pa.string()), ("shard", pa.string()), ("source", pa.string()), ("video_id", pa.string()),
     ("source_path", pa.string()), ("start", pa.float64()), ("end", pa.float64()), ("frames", pa.int32()),
     ("duration", pa.float64()), ("flags", pa.list_(pa.string())), ("silent", pa.bool_())]
    + [(c, pa.float64()) for c in QUALITY_COLUMNS])
FAILURES_SCHEMA = pa.schema(
    [("source", pa.string()), ("video_id", pa.string()), ("source_path", pa.string()), ("start", pa.float64()),
     ("end", pa.float64()), ("stage", pa.string()), ("reason", pa.string())])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def relative_source(path: str, root: Path | None) -> str:
    """Source paths are stored relative to the input folder so that a manifest is portable."""
    if root is not None:
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return Path(path).name


class Staging:
    """Finished samples and failures of a build, kept under OUT/.staging until the shards are written."""

    def __init__(self, out: Path):
        self.samples_dir = out / ".staging" / "samples"
        self.failures_dir = out / ".staging" / "failures"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.failures_dir.mkdir(parents=True, exist_ok=True)

    def put(self, record: ClipRecord, root: Path | None) -> None:
        if record.ok:
            self._put_sample(record)
        else:
            self._put_failure(record, root)

    def _put_sample(self, record: ClipRecord) -> None:
        final = self.samples_dir / record.key
        tmp = self.samples_dir / f".{record.key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in record.members.items():
            (tmp / name).write_bytes(data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

    def _put_failure(self, record: ClipRecord, root: Path | None) -> None:
        stage, reason = next(iter(record.errors.items()))
        row = {"source": record.spec.source, "video_id": record.spec.video_id,
               "source_path": relative_source(record.spec.path, root), "start": record.start or None,
               "end": record.end or None, "stage": stage, "reason": reason}
        name = hashlib.sha1(f"{record.spec.video_id}\0{record.start}".encode()).hexdigest()[:16]
        (self.failures_dir / f"{name}.json").write_text(json.dumps(row, sort_keys=True))

    def keys(self) -> list[str]:
        return sorted(p.name for p in self.samples_dir.iterdir() if not p.name.startswith("."))

    def failures(self) -> list[dict]:
        rows = [json.loads(p.read_text()) for p in self.failures_dir.glob("*.json")]
        return sorted(rows, key=lambda r: (r["video_id"], r["start"] or 0.0))

    def members(self, key: str) -> dict[str, bytes]:
        return {name: (self.samples_dir / key / name).read_bytes() for name in MEMBERS}


def write_shards(staging: Staging, out: Path, per_shard: int) -> list[dict]:
    """Write shards in key order (tar mtime 0, fixed owner) and return [{path, sha256, samples, bytes, keys}]."""
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    keys = staging.keys()
    shards = []
    for i in range(0, len(keys), per_shard):
        chunk = keys[i:i + per_shard]
        final = shard_dir / f"{SHARD_PREFIX}-{i // per_shard:06d}.tar"
        tmp = final.with_suffix(".tar.tmp")
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, user="posetalk", group="posetalk", mtime=0, encoder=False)
            for key in chunk:
                writer.write({"__key__": key, **staging.members(key)})
            writer.close()
        os.replace(tmp, final)
        shards.append({"path": final.relative_to(out).as_posix(), "sha256": sha256_file(final),
                       "samples": len(chunk), "bytes": final.stat().st_size, "keys": chunk})
    for stale in set(shard_dir.glob("*.tar")) - {out / s["path"] for s in shards}:
        stale.unlink()   # shards of an earlier build of the same OUT that this one no longer has
    return shards


def sample_rows(staging: Staging, shards: list[dict], root: Path | None, paths: dict[str, str]) -> list[dict]:
    rows = []
    for shard in shards:
        for key in shard["keys"]:
            meta = json.loads((staging.samples_dir / key / "meta.json").read_text())
            quality = meta["quality"]
            rows.append({"key": key, "shard": shard["path"], "source": meta["source"], "video_id": meta["video_id"],
                         "source_path": relative_source(paths.get(meta["video_id"], ""), root),
                         "start": meta["start"], "end": meta["end"], "frames": meta["frames"],
                         "duration": meta["frames"] / meta["fps"], "flags": meta["flags"],
                         "silent": bool(quality["silent"]),
                         **{c: quality.get(c) for c in QUALITY_COLUMNS}})
    return rows


def write_outputs(staging: Staging, out: Path, *, per_shard: int, root: Path | None, sources: list[dict],
                  header: dict) -> dict:
    """Shards, samples.parquet, failures.parquet and manifest.json; returns the manifest."""
    shards = write_shards(staging, out, per_shard)
    paths = {s["video_id"]: s["abs_path"] for s in sources}
    rows = sample_rows(staging, shards, root, paths)
    failures = staging.failures()
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), out / "samples.parquet")
    pq.write_table(pa.Table.from_pylist(failures, schema=FAILURES_SCHEMA), out / "failures.parquet")
    manifest = {
        "format": "posetalk-shards", "schema_version": SCHEMA_VERSION, **header,
        "members": {name: desc for name, (desc, _, _) in MEMBERS.items()},
        "counts": {"samples": len(rows), "shards": len(shards), "failures": len(failures),
                   "videos": len(sources), "hours": round(sum(r["duration"] for r in rows) / 3600, 4)},
        "shards": [{k: v for k, v in s.items() if k != "keys"} for s in shards],
        "sources": [{k: v for k, v in s.items() if k != "abs_path"} for s in sources],
        "tables": {"samples": "samples.parquet", "failures": "failures.parquet"},
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / "manifest.json")
    return manifest
