"""The sample schema, defined once: what a shard sample holds, and the records that flow between stages.

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

# member name -> (description, dtype, per-frame?) ; per-frame arrays have exactly T rows.
MEMBERS: dict[str, tuple[str, str, bool]] = {
    "video.mp4": ("square face crop, constant 25 fps, H.264, no audio", "mp4", False),
    "audio.flac": ("the clip's audio, 16 kHz mono", "flac", False),
    "pose.npy": ("yaw, pitch, roll (deg); face centre x, y and scale in source pixels", "float32[T,6]", True),
    "gaze.npy": ("yaw, pitch (deg) of the image-left eye, then the image-right eye, eye-in-head; the clip's median "
                 "left-right difference removed; frames with a shut eye filled in (meta quality.gaze_filled_spans)",
                 "float32[T,4]", True),
    "landmarks.npy": ("dense landmarks in crop coordinates, 0..1 (z in crop widths)", "float16[T,N,3]", True),
    "text.json": ("the clip's motion prompts and where they came from (dataset captions or the pose track)",
                  "json", False),
    "meta.json": ("source, times, fps, sizes, crop box, quality figures (gaze consistency, shut-eye frame spans), "
                  "flags, versions", "json", False),
}
# Feature layers: one member each, named after the model that made it (e.g. mel.npy, hubert.npy, minilm.npy,
# clip_vit-b-32.npy), so builds with different models never share a member name.
SPEECH_LAYER = ("speech features aligned to the video frames", "float16[T,D]", True)
TEXT_LAYER = ("text embeddings, one row per prompt of text.json", "float16[P,D]", False)


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
