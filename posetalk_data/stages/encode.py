"""Stage 8a, encode: turn a finished clip record into the sample's members (bytes), checking the schema.

The shards themselves are written by the driver (posetalk_data.shards), so that which shard a clip lands in
depends only on its key, never on which worker finished first.
"""
from __future__ import annotations

import json

import numpy as np

from ..media import npy_bytes
from ..schema import AUDIO_RATE, MEMBERS, SCHEMA_VERSION, VIDEO_FPS, ClipRecord
from .base import ClipFailure, Resources, Stage

PER_FRAME = {"pose": np.float32, "gaze": np.float32, "landmarks": np.float16}


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


class EncodeStage(Stage):
    name = "encode"
    resources = Resources(cpus=0.1)   # arrays to bytes

    def __init__(self, crop_size: int, speech_member: str, text_member: str):
        self.crop_size = crop_size
        self.layers = {speech_member: True, text_member: False}   # member -> per frame?

    def inputs(self) -> list[str]:
        return ["video_bytes", "flac", "crop_box", "pose", "gaze", "landmarks", "quality", "speech", "text",
                "text_embedding"]

    def outputs(self) -> list[str]:
        return ["members"]

    def process(self, record: ClipRecord) -> ClipRecord:
        frames = len(record.arrays["crop_box"])
        members = {name: record.members[name] for name in ("video.mp4", "audio.flac")}   # packed (stages/pack.py)
        for name, dtype in PER_FRAME.items():
            array = np.asarray(record.arrays[name], dtype=dtype)
            if len(array) != frames:
                raise ClipFailure(f"{name} has {len(array)} rows for {frames} video frames")
            if not np.isfinite(array).all():
                raise ClipFailure(f"{name} has non-finite values")
            members[f"{name}.npy"] = npy_bytes(array)
        for name, per_frame in self.layers.items():
            array = np.asarray(record.arrays[name], dtype=np.float16)
            if per_frame and len(array) != frames:
                raise ClipFailure(f"{name} has {len(array)} rows for {frames} video frames")
            members[name] = npy_bytes(array)
        members["text.json"] = json.dumps(record.meta["text"], indent=1, sort_keys=True).encode()
        members["meta.json"] = json.dumps(sample_meta(record, frames, self.crop_size), indent=1,
                                          sort_keys=True).encode()
        assert set(members) == set(MEMBERS) | set(self.layers), "schema and encoder disagree"   # a wiring bug
        record.members = members
        return record
