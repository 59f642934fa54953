"""Stage 7, quality figures per clip, and the flags a clip is kept with."""
from __future__ import annotations

import numpy as np

from ..config import PipelineConfig, QualityConfig
from ..gaze import consistency, spans
from ..schema import ClipRecord
from .base import Resources, Stage


def rms_dbfs(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20 * np.log10(max(rms, 1e-10))


GAZE_OFFSET_LARGE = 20.0  # deg of constant left-right yaw difference removed: worth a look (see the README)


def spread(x: np.ndarray) -> float:
    """Robust range of a track: 95th minus 5th percentile."""
    return float(np.percentile(x, 95) - np.percentile(x, 5))


class QualityStage(Stage):
    name = "quality"
    resources = Resources(cpus=0.25)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.quality, cfg.facetrack.crop_size)

    def __init__(self, cfg: QualityConfig, crop_size: int):
        self.cfg = cfg
        self.crop_size = crop_size

    def inputs(self) -> list[str]:
        return ["pose", "clip_audio", "crop_box", "gaze", "eyes_closed", "mouth_opening", "av_sync"]

    def outputs(self) -> list[str]:
        return ["quality"]

    def process(self, record: ClipRecord) -> ClipRecord:
        pose = record.arrays["pose"]
        level = rms_dbfs(record.arrays["clip_audio"])
        face_px = float(np.median(pose[:, 5]))
        crop_px = float(np.median(record.arrays["crop_box"][:, 2]))
        figures = {
            "face_present_fraction": record.meta["face_present_fraction"],
            "landmark_confidence": record.meta.get("landmark_confidence"),
            "landmarks_found_fraction": record.meta["landmarks_found_fraction"],
            "pose_fit_rms": record.meta["pose_fit_rms"],
            "yaw_range": spread(pose[:, 0]), "pitch_range": spread(pose[:, 1]), "roll_range": spread(pose[:, 2]),
            "face_size_px": face_px,
            "crop_source_px": crop_px,
            "audio_dbfs": level,
            "crop_padded_fraction": record.meta.get("crop_padded_fraction", 0.0),
            "crop_scale_effective": record.meta.get("crop_scale_effective"),
            "silent": bool(level < self.cfg.silence_dbfs),
        }
        if figures["silent"]:
            record.flags.append("silent_audio")
        if face_px < self.cfg.small_face_px:
            record.flags.append("small_face")
        if crop_px < self.crop_size / 2:   # the crop is upsampled more than twice
            record.flags.append("low_resolution")
        figures.update(self.gaze_figures(record))
        figures.update(record.meta.get("av_sync", {}))   # the sync stage's offset figures (stages/sync.py)
        if figures["eyes_closed_fraction"] > 0.5:
            record.flags.append("eyes_closed")
        if abs(figures["gaze_vergence_offset"]) > GAZE_OFFSET_LARGE:
            record.flags.append("gaze_offset_large")
        record.meta["quality"] = figures
        return record

    @staticmethod
    def gaze_figures(record: ClipRecord) -> dict:
        """Gaze consistency (posetalk_data.gaze.consistency), the left-right yaw offset the gaze stage removed, and
        which frames have a shut eye: their gaze.npy rows are filled in, not measured."""
        closed = record.arrays["eyes_closed"]
        figures = consistency(record.arrays["gaze"], closed, record.arrays["mouth_opening"],
                              record.arrays["pose"][:, 0])
        figures["gaze_vergence_offset"] = record.meta["gaze_vergence_offset"][0]
        figures["eyes_closed_fraction"] = float(closed.any(1).mean())
        figures["gaze_filled_spans"] = spans(closed.any(1))
        return figures
