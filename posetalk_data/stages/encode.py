"""Stage 8a, encode: turn a finished clip record into the sample's members (bytes), checking the schema.

It encodes what the earlier stages declare they write (`Stage.writes`): a member `x.npy` from the record's array
`x` (in its declared dtype; a per-frame one must have one row per video frame), `x.json` from the record's meta `x`,
and anything else (the video and the FLAC) as the bytes the stage packed into `record.members`; then meta.json.

The shards themselves are written by the driver (posetalk_data.shards), so that which shard a clip lands in
depends only on its key, never on which worker finished first.
"""
from __future__ import annotations

import json

import numpy as np

from ..config import PipelineConfig
from ..members import npy_bytes
from ..schema import AUDIO_RATE, SCHEMA_VERSION, VIDEO_FPS, ClipRecord, Member
from .base import ClipFailure, Resources, Stage


def sample_meta(record: ClipRecord, frames: int, crop_size: int) -> dict:
    box = record.arrays["crop_box"]
    return {
        "key": record.key, "schema_version": SCHEMA_VERSION,
        "source": record.spec.source, "video_id": record.spec.video_id,
        "start": round(record.start, 3), "end": round(record.end, 3),
        "fps": VIDEO_FPS, "frames": frames, "audio_rate": AUDIO_RATE,
        "source_size": [record.probe["width"], record.probe["height"]], "source_fps": record.probe["fps"],
        "source_rotation": record.probe["rotation"], "crop_size": crop_size,
        "crop_box_median": [round(float(v), 2) for v in np.median(box, 0)],   # cx, cy, side in source px
        "audio_source": record.meta.get("audio_source"),
        "landmarks_backend": record.meta.get("landmarks_backend"),
        "flags": sorted(set(record.flags)),
        "quality": record.meta.get("quality", {}),
        "extra": record.spec.extra,
    }


def encoded(record: ClipRecord, member: Member, frames: int) -> bytes:
    """One member's bytes from the record, as the stage that wrote it declared it."""
    if member.array_dtype:
        array = np.asarray(record.arrays[member.stem], dtype=member.array_dtype)
        if member.per_frame and len(array) != frames:
            raise ClipFailure(f"{member.stem} has {len(array)} rows for {frames} video frames")
        if not np.isfinite(array).all():
            raise ClipFailure(f"{member.stem} has non-finite values")
        return npy_bytes(array)
    if member.name.endswith(".json"):
        return json.dumps(record.meta[member.name.removesuffix(".json")], indent=1, sort_keys=True).encode()
    return record.members[member.name]


class EncodeStage(Stage):
    name = "encode"
    resources = Resources(cpus=0.1)   # arrays to bytes
    members = (Member("meta.json", "source, times, fps, sizes, crop box, quality figures (gaze consistency, shut-eye "
                      "frame spans), flags, versions", "json", versions=("posetalk",)),)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.facetrack.crop_size, [m for stage in before for m in stage.writes()])

    def __init__(self, crop_size: int, earlier: list[Member]):
        self.crop_size = crop_size
        self.earlier = earlier      # the members the earlier stages write, encoded here

    def inputs(self) -> list[str]:
        return ["video_bytes", "flac", "crop_box", "pose", "gaze", "landmarks", "quality", "speech", "text",
                "text_embedding"]

    def outputs(self) -> list[str]:
        return ["members"]

    def process(self, record: ClipRecord) -> ClipRecord:
        frames = len(record.arrays["crop_box"])
        members = {member.name: encoded(record, member, frames) for member in self.earlier}
        members["meta.json"] = json.dumps(sample_meta(record, frames, self.crop_size), indent=1,
                                          sort_keys=True).encode()
        record.members = members
        return record
