"""Stage 6b, sync: the clip's audio cut from the source, its offset to the lips measured and corrected.

Runs in the video worker before pack, so the FLAC, the audio level and every speech feature (the model workers)
are made from the corrected samples. The measure is posetalk_data.avsync ("lips-envelope", no weights); the sign
convention is its: a positive offset means the audio is late. Where |offset| <= max_shift_frames and the
confidence reaches min_confidence, the clip's audio is read that many frames later (earlier for a negative offset)
in the source, so its length is unchanged (silence only where the source has no audio). The figures go to
meta.json quality (and samples.parquet); a confident offset beyond the limit is flagged av_offset_large, a clip
without confidence av_sync_low, and speech the mouth does not follow voice_over. A flagged clip is dropped only
where the YAML says so (sync.drop_*).
"""
from __future__ import annotations

import numpy as np

from .. import avsync
from ..config import PipelineConfig, SyncConfig
from ..media import read_wav
from ..schema import AUDIO_RATE, VIDEO_FPS, ClipRecord
from .base import ClipFailure, Resources, Stage
from .normalise import audio_file

HOP = AUDIO_RATE // VIDEO_FPS
DROP_SETTING = {"av_offset_large": "drop_offset_large", "av_sync_low": "drop_sync_low",
                "voice_over": "drop_voice_over"}   # flag -> the sync setting that drops such a clip instead


def span(samples: np.ndarray, start: int, length: int) -> np.ndarray:
    """samples[start: start + length], silence where that runs outside the array (start may be negative)."""
    out = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, len(samples))
    if hi > lo:
        out[lo - start: hi - start] = samples[lo:hi]
    return out


class SyncStage(Stage):
    name = "sync"
    resources = Resources(cpus=0.25)   # one FFT per frame and a few dot products per lag

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.sync, cfg.quality.silence_dbfs)

    def __init__(self, cfg: SyncConfig, silence_dbfs: float):
        self.cfg = cfg
        self.silence_dbfs = silence_dbfs

    def inputs(self) -> list[str]:
        return ["audio", "mesh", "crop_box"]

    def outputs(self) -> list[str]:
        return ["clip_audio", "av_sync"]

    def versions(self) -> dict[str, str]:
        return {"av_sync": avsync.VERSION if self.cfg.enabled else "off"}

    def process(self, record: ClipRecord) -> ClipRecord:
        frames = len(record.arrays["crop_box"])
        samples = read_wav(audio_file(record))
        first = round(record.meta.get("audio_offset", 0.0) * AUDIO_RATE)   # the clip's start in the video's audio
        if not self.cfg.enabled:
            record.arrays["clip_audio"] = span(samples, first, frames * HOP)
            record.meta["av_sync"] = {"av_sync_method": "off"}
            return record
        lip = avsync.lip_height(record.arrays["mesh"])
        search = self.cfg.search_frames
        found = avsync.measure(lip, span(samples, first - search * HOP, (frames + 2 * search) * HOP), search)
        shift = self.shift(found)
        audio = span(samples, first + shift * HOP, frames * HOP)
        record.arrays["clip_audio"] = audio
        figures = {"av_offset_frames": found.offset, "av_sync_confidence": round(found.confidence, 3),
                   "av_shift_applied_frames": shift, "av_sync_method": avsync.METHOD,
                   "av_speech_share": round(avsync.speech_share(audio, frames, self.silence_dbfs), 3),
                   "av_mouth_motion": round(avsync.mouth_motion(lip), 4)}
        record.meta["av_sync"] = figures
        for flag in self.flags(found, figures, frames):
            if getattr(self.cfg, DROP_SETTING[flag]):
                raise ClipFailure(f"{flag} (audio offset {found.offset} frames, confidence {found.confidence:.2f}; "
                                  f"sync.{DROP_SETTING[flag]} is set)")
            record.flags.append(flag)
        return record

    def shift(self, found: avsync.SyncMeasure) -> int:
        """Frames to move the audio by: the offset where it is confident and within the limit, else none."""
        confident = found.offset is not None and found.confidence >= self.cfg.min_confidence
        if self.cfg.correct and confident and abs(found.offset) <= self.cfg.max_shift_frames:
            return found.offset
        return 0

    def flags(self, found: avsync.SyncMeasure, figures: dict, frames: int) -> list[str]:
        out = []
        if found.offset is None or found.confidence < self.cfg.min_confidence:
            out.append("av_sync_low")
        elif abs(found.offset) > self.cfg.max_shift_frames:
            out.append("av_offset_large")
        talking = figures["av_speech_share"] >= self.cfg.speech_min_share
        # a shut mouth says it at any length; the correlation only over enough seconds (a 3 s clip of real
        # talking often stays under 2: see README "Audio-video offset")
        long_enough = frames >= self.cfg.voice_over_min_s * VIDEO_FPS
        if talking and (figures["av_mouth_motion"] < self.cfg.still_mouth_below
                        or (long_enough and found.confidence < self.cfg.voice_over_below)):
            out.append("voice_over")
        return out
