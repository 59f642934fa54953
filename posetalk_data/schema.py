"""The sample schema, defined once: what a shard sample's members are (`Member`, declared by the stage that writes
each; posetalk_data.pipeline.MEMBERS lists them), and the records that flow between stages.

A sample is one face clip. Its key is derived from (source, video id, start, end) so that a rebuild of the
same input gives the same keys, whatever order the workers finish in.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1"
VIDEO_FPS = 25
AUDIO_RATE = 16_000


@dataclass(frozen=True)
class Member:
    """One member of a sample, declared by the stage that writes it (`Stage.members`); posetalk_data.pipeline
    collects them in stage order into the sample's member list, so the schema is the stages' declarations."""

    name: str                        # file name in the sample: pose.npy, video.mp4, meta.json, ...
    description: str                 # for people: the manifest's "members" and the dataset card
    dtype: str                       # arrays: "float32[T,6]" (T: one row per video frame; verify checks it); else
                                     # the format ("mp4", "flac", "json")
    versions: tuple[str, ...] = ()   # the manifest "versions" entries that determine its bytes

    @property
    def stem(self) -> str:
        """The record's array of a .npy member (ClipRecord.arrays keys per-frame arrays by member stem)."""
        return self.name.removesuffix(".npy")

    @property
    def per_frame(self) -> bool:
        """An array with exactly one row per video frame."""
        return self.dtype.endswith("]") and self.dtype.split("[", 1)[1].startswith("T,")

    @property
    def array_dtype(self) -> str | None:
        """numpy dtype of a .npy member (None for encoded media and JSON)."""
        return self.dtype.split("[", 1)[0] if self.name.endswith(".npy") else None


@dataclass(frozen=True)
class VideoSpec:
    """One input video as a source adapter describes it (before any processing)."""

    source: str                      # adapter name: folder, demo, hdtf, ...
    video_id: str                    # stable id within the source (relative path without suffix, dataset id)
    path: str                        # media file
    audio_path: str | None = None    # separate audio (a .wav beside a silent video)
    start: float | None = None       # seconds in the source; None = whole file
    end: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # adapter-specific meta kept in meta.json


@dataclass
class ClipRecord:
    """What flows between stages for one video, then for one face clip cut from it.

    Stages fill fields in place; a failed clip carries `errors[stage] = reason` and is skipped by later stages.
    """

    spec: VideoSpec
    workdir: Path
    start: float = 0.0                # clip span in the source, seconds
    end: float = 0.0
    probe: dict[str, Any] = field(default_factory=dict)
    video: Path | None = None         # current video file (normalised, then the crop)
    audio: Path | None = None         # 16 kHz mono wav
    audio_plan: Any = None            # stages/normalise.AudioPlan while `audio` is still to be written
    arrays: dict[str, Any] = field(default_factory=dict)   # per-frame arrays by member stem
    meta: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)          # kept-with-a-flag conditions
    members: dict[str, bytes] = field(default_factory=dict)  # the encoded sample, filled last
    errors: dict[str, str] = field(default_factory=dict)
    # (T, H, W, 3) uint8 RGB frames at 25 fps held in memory in place of spec.path's video: probe and
    # normalise.video_frames read them instead of a file (posetalk_models scores generated frames without an mp4)
    frames: Any = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def key(self) -> str:
        return sample_key(self.spec.source, self.spec.video_id, self.start, self.end)


def sample_key(source: str, video_id: str, start: float, end: float) -> str:
    """Readable, filesystem- and webdataset-safe key: no dots (webdataset splits on them), no leading '-'."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", video_id).strip("_")[:60] or "video"
    digest = hashlib.sha1(f"{source}\0{video_id}\0{start:.3f}\0{end:.3f}".encode()).hexdigest()[:10]
    return f"{source}_{slug}_{round(start * 1000):08d}_{round(end * 1000):08d}_{digest}"

# meta.json quality figures that are also columns of samples.parquet (and features of the dataset card)
QUALITY_COLUMNS = ["face_present_fraction", "landmark_confidence", "landmarks_found_fraction", "pose_fit_rms",
                   "yaw_range", "pitch_range", "roll_range", "face_size_px", "crop_source_px", "audio_dbfs",
                   "crop_padded_fraction", "crop_scale_effective",
                   # gaze consistency (posetalk_data.gaze.consistency) and shut eyes (README: gaze)
                   "gaze_lr_yaw_r", "gaze_lr_pitch_r", "gaze_lr_yaw_diff", "gaze_yaw_range", "gaze_mouth_r",
                   "gaze_head_yaw_r", "gaze_vergence_offset", "eyes_closed_fraction",
                   # audio-video offset (stages/sync.py; positive: the audio is late), frames at 25 fps
                   "av_offset_frames", "av_sync_confidence", "av_shift_applied_frames"]
QUALITY_TEXT_COLUMNS = ["av_sync_method"]
