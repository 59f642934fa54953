"""Stage 7a, pack: what the later stages need from this worker's files, as data.

The clip's 16 kHz samples (for the audio level and the speech features), its crop video's bytes and its FLAC. After
this stage no stage reads a file of this worker, so the model stages (speech, text, encode) can run in another
process, or on another node: the model workers of posetalk_data.runner.WorkerPool.
"""
from __future__ import annotations

from ..media import encode_flac, read_wav
from ..schema import AUDIO_RATE, VIDEO_FPS, ClipRecord
from .base import Resources, Stage


class PackStage(Stage):
    name = "pack"
    resources = Resources(cpus=0.5)   # one FLAC encode

    def inputs(self) -> list[str]:
        return ["video", "audio", "crop_box"]

    def outputs(self) -> list[str]:
        return ["clip_audio", "video_bytes", "flac"]

    def process(self, record: ClipRecord) -> ClipRecord:
        frames = len(record.arrays["crop_box"])
        start = record.meta.get("audio_offset", 0.0)
        offset = round(start * AUDIO_RATE)
        record.arrays["clip_audio"] = read_wav(record.audio)[offset: offset + frames * AUDIO_RATE // VIDEO_FPS]
        record.members["video.mp4"] = record.video.read_bytes()
        record.members["audio.flac"] = encode_flac(record.audio, start=start, duration=frames / VIDEO_FPS)
        return record

