"""Stage 7a, pack: what the later stages need from this worker's files, as data.

The clip's crop video's bytes and the FLAC of its 16 kHz samples (cut and offset-corrected by the sync stage,
which also keeps them for the audio level and the speech features). After this stage no stage reads a file of
this worker, so the model stages (speech, text, encode) can run in another process, or on another node: the
model workers of posetalk_data.runner.WorkerPool.
"""
from __future__ import annotations

from ..members import flac_bytes
from ..schema import AUDIO_RATE, ClipRecord, Member
from .base import Resources, Stage


class PackStage(Stage):
    name = "pack"
    resources = Resources(cpus=0.5)   # one FLAC encode (in-process)
    members = (Member("video.mp4", "square face crop, constant 25 fps, H.264, no audio", "mp4",
                      versions=("face_detector", "ffmpeg")),
               Member("audio.flac", "the clip's audio, 16 kHz mono", "flac", versions=("ffmpeg", "av_sync")))

    def inputs(self) -> list[str]:
        return ["video", "clip_audio"]

    def outputs(self) -> list[str]:
        return ["video_bytes", "flac"]

    def process(self, record: ClipRecord) -> ClipRecord:
        record.members["video.mp4"] = record.video.read_bytes()
        # exactly the clip's span (stages/sync.py): silence where the source's audio ends early
        record.members["audio.flac"] = flac_bytes(record.arrays["clip_audio"], AUDIO_RATE)
        return record

