"""Stage 7a, pack: what the later stages need from this worker's files, as data.

The clip's 16 kHz samples (for the audio level and the speech features), its crop video's bytes and its FLAC. After
this stage no stage reads a file of this worker, so the model stages (speech, text, encode) can run in another
process, or on another node: the model workers of posetalk_data.runner.WorkerPool.
"""
from __future__ import annotations

import numpy as np

from ..media import flac_bytes, read_wav
from ..schema import AUDIO_RATE, VIDEO_FPS, ClipRecord
from .base import Resources, Stage


class PackStage(Stage):
    name = "pack"
    resources = Resources(cpus=0.5)   # one FLAC encode (in-process)

    def inputs(self) -> list[str]:
        return ["video", "audio", "crop_box"]

    def outputs(self) -> list[str]:
        return ["clip_audio", "video_bytes", "flac"]

    def process(self, record: ClipRecord) -> ClipRecord:
        length = len(record.arrays["crop_box"]) * AUDIO_RATE // VIDEO_FPS
        offset = round(record.meta.get("audio_offset", 0.0) * AUDIO_RATE)
        audio = read_wav(record.audio)[offset: offset + length]
        record.arrays["clip_audio"] = audio
        record.members["video.mp4"] = record.video.read_bytes()
        # the FLAC holds exactly the clip's span, padded with silence where the audio ends early
        record.members["audio.flac"] = flac_bytes(np.pad(audio, (0, length - len(audio))), AUDIO_RATE)
        return record

