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

from .schema import MEMBERS, SCHEMA_VERSION, ClipRecord, VideoSpec
from .storage import crash_point, write_json

SHARD_PREFIX = "posetalk"
QUALITY_COLUMNS = ["face_present_fraction", "landmark_confidence", "landmarks_found_fraction", "pose_fit_rms",
                   "yaw_range", "pitch_range", "roll_range", "face_size_px", "crop_source_px", "audio_dbfs",
                   "crop_padded_fraction", "crop_scale_effective",
                   # gaze consistency (posetalk_data.gaze.consistency) and shut eyes (README: gaze)
                   "gaze_lr_yaw_r", "gaze_lr_pitch_r", "gaze_lr_yaw_diff", "gaze_yaw_range", "gaze_mouth_r",
                   "gaze_head_yaw_r", "gaze_vergence_offset", "eyes_closed_fraction",
                   # audio-video offset (stages/sync.py; positive: the audio is late), frames at 25 fps
                   "av_offset_frames", "av_sync_confidence", "av_shift_applied_frames"]
QUALITY_TEXT_COLUMNS = ["av_sync_method"]
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


class StagingMismatch(RuntimeError):
    """OUT holds staged clips of a different pipeline config or model versions."""


def _digest(*parts: object) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()[:16]


STAGING_DIR = ".staging"
STAGING_MARKER = "posetalk-staging.json"    # written first, so a staging is recognisable from the moment it exists


def is_staging(folder: Path) -> bool:
    """`folder` is a build's staging: its marker, a build.json of a staging made before the marker existed, or
    what a kill can leave before the marker is in place (an empty folder, or only the marker's temporary file)."""
    if not folder.is_dir():
        return False
    names = {p.name for p in folder.iterdir()}
    return bool(names & {STAGING_MARKER, "build.json"}) or names <= {f"{STAGING_MARKER}.tmp"}


class Staging:
    """Finished samples and per-video results of a build, kept under OUT/.staging.

    A video is done once its marker (videos/<id>.json: its sample keys and failures) exists; the marker is written
    after the video's samples, so a build killed at any point redoes exactly the videos without a marker.
    """

    def __init__(self, out: Path):
        root = out / STAGING_DIR
        root.mkdir(parents=True, exist_ok=True)
        if not (root / STAGING_MARKER).is_file():
            write_json(root / STAGING_MARKER, {"format": "posetalk-staging", "schema_version": SCHEMA_VERSION})
        self.samples_dir, self.videos_dir, self.shards_dir = root / "samples", root / "videos", root / "shards"
        self.fingerprint_path = root / "build.json"
        for d in (self.samples_dir, self.videos_dir, self.shards_dir):
            d.mkdir(exist_ok=True)

    def check_fingerprint(self, fingerprint: dict, *, partial: bool = False) -> None:
        """Staged clips are reused only by a build with the same config and versions (never mixed silently).
        partial: compare only the keys given (the config, before the workers report the model versions) and write
        nothing; the full fingerprint is written by the first build of OUT."""
        path = self.fingerprint_path
        if path.is_file():
            before = json.loads(path.read_text())
            keys = set(fingerprint) if partial else set(before) | set(fingerprint)
            differs = sorted(k for k in keys if before.get(k) != fingerprint.get(k))
            if differs:
                raise StagingMismatch(
                    f"{path.parent.parent} holds clips staged with a different {', '.join(differs)}; "
                    "rerun with --fresh to discard them, or choose another --out")
        elif not partial:
            write_json(path, fingerprint, indent=None)

    def _marker(self, spec: VideoSpec) -> Path:
        return self.videos_dir / f"{_digest(spec.source, spec.video_id, spec.start, spec.end)}.json"

    def done(self, spec: VideoSpec) -> bool:
        return self._marker(spec).is_file()

    def put_video(self, spec: VideoSpec, records: list[ClipRecord], root: Path | None) -> None:
        for record in records:
            if record.ok:
                self._put_sample(record)
        marker = {"video_id": spec.video_id, "keys": sorted(r.key for r in records if r.ok),
                  "failures": [failure_row(r, root) for r in records if not r.ok]}
        write_json(self._marker(spec), marker, indent=None)

    def _put_sample(self, record: ClipRecord) -> None:
        final = self.samples_dir / record.key
        tmp = self.samples_dir / f".{record.key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in record.members.items():
            (tmp / name).write_bytes(data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

    def forget_failed(self) -> int:
        """--retry-failed: videos with a failure are done no more, so the next run processes them again."""
        failed = [p for p in self.videos_dir.glob("*.json")      # a dropped span is no failure to retry
                  if any(f.get("kind") != "span" for f in json.loads(p.read_text())["failures"])]
        for path in failed:
            path.unlink()
        return len(failed)

    def results(self, specs: list[VideoSpec]) -> tuple[list[str], list[dict]]:
        """Sorted sample keys and failure rows of the given videos (staged results of other inputs are ignored)."""
        keys, failures = [], []
        for spec in specs:
            if self.done(spec):
                marker = json.loads(self._marker(spec).read_text())
                keys += marker["keys"]
                failures += marker["failures"]
        return sorted(keys), sorted(failures, key=lambda r: (r["video_id"], r["start"] or 0.0))

    def members(self, key: str) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((self.samples_dir / key).iterdir())}


def failure_row(record: ClipRecord, root: Path | None) -> dict:
    stage, reason = next(iter(record.errors.items()))
    return {"source": record.spec.source, "video_id": record.spec.video_id,
            "source_path": relative_source(record.spec.path, root), "start": record.start or None,
            "end": record.end or None, "stage": stage, "reason": reason, "kind": record.meta.get("unit", "video")}


def write_tar(final: Path, samples) -> str:
    """Write (key, {member: bytes}) samples as a shard under a temporary name, then rename; returns its sha256.
    Fixed owner and mtime 0 (and webdataset's sorted members): the same samples give the same bytes."""
    from webdataset import TarWriter   # here, not at the top: webdataset imports torch (1.5 s for every command)

    tmp = final.with_suffix(".tar.tmp")
    with open(tmp, "wb") as stream:
        writer = TarWriter(stream, user="posetalk", group="posetalk", mtime=0, encoder=False)
        for key, members in samples:
            writer.write({"__key__": key, **members})
        writer.close()
    crash_point(f"write:{final.name}")
    os.replace(tmp, final)
    return sha256_file(final)


def write_shards(staging: Staging, keys: list[str], out: Path, per_shard: int) -> list[dict]:
    """Write shards in key order (tar mtime 0, fixed owner) and return [{path, sha256, samples, bytes, keys}].

    A shard already written with the same keys (recorded in .staging/shards) and intact is kept as it is."""
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(0, len(keys), per_shard):
        chunk = keys[i:i + per_shard]
        final = shard_dir / f"{SHARD_PREFIX}-{i // per_shard:06d}.tar"
        record = staging.shards_dir / f"{final.name}.json"
        before = json.loads(record.read_text()) if record.is_file() else {}
        if before.get("keys") == chunk and final.is_file() and sha256_file(final) == before.get("sha256"):
            digest = before["sha256"]
        else:
            digest = write_tar(final, ((key, staging.members(key)) for key in chunk))
            write_json(record, {"keys": chunk, "sha256": digest}, indent=None, sort_keys=False)
        shards.append({"path": final.relative_to(out).as_posix(), "sha256": digest,
                       "samples": len(chunk), "bytes": final.stat().st_size, "keys": chunk})
    for record in staging.shards_dir.glob("*.tar.json"):   # shards an earlier run of this build wrote ...
        stale = shard_dir / record.name.removesuffix(".json")
        if stale not in {out / s["path"] for s in shards}:  # ... that this one no longer has; nothing else
            stale.unlink(missing_ok=True)
            record.unlink()
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
                         "identity": meta["extra"].get("identity"), "split": meta["extra"].get("split"),
                         **{c: quality.get(c) for c in QUALITY_COLUMNS + QUALITY_TEXT_COLUMNS}})
    return rows


def write_outputs(staging: Staging, specs: list[VideoSpec], out: Path, *, per_shard: int, root: Path | None,
                  sources: list[dict], header: dict, layers: dict[str, str] | None = None,
                  skipped: list[dict] = ()) -> dict:
    """Shards, samples.parquet, failures.parquet and manifest.json (written last); returns the manifest.

    `layers`: the feature-layer members (name -> description); `skipped`: failure rows for clips the source
    adapter left out before any processing."""
    keys, failures = staging.results(specs)
    failures = sorted([*skipped, *failures], key=lambda r: (r["video_id"], r["start"] or 0.0))
    shards = write_shards(staging, keys, out, per_shard)
    paths = {s["video_id"]: s["abs_path"] for s in sources}
    rows = sample_rows(staging, shards, root, paths)
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), out / "samples.parquet")
    pq.write_table(pa.Table.from_pylist(failures, schema=FAILURES_SCHEMA), out / "failures.parquet")
    manifest = {
        "format": "posetalk-shards", "schema_version": SCHEMA_VERSION, **header,
        "members": {**{name: desc for name, (desc, _, _) in MEMBERS.items()}, **(layers or {})},
        "counts": {"samples": len(rows), "shards": len(shards),
                   "failures": sum(f.get("kind") != "span" for f in failures),   # videos and clips dropped
                   "videos": len(sources), "hours": round(sum(r["duration"] for r in rows) / 3600, 4)},
        "shards": [{k: v for k, v in s.items() if k != "keys"} for s in shards],
        "sources": [{k: v for k, v in s.items() if k != "abs_path"} for s in sources],
        "tables": {"samples": "samples.parquet", "failures": "failures.parquet"},
    }
    write_json(out / "manifest.json", manifest)
    return manifest
