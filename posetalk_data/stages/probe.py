"""Stage 1, probe: read streams, duration, frame rate and rotation with ffprobe; reject what is not a video."""
from __future__ import annotations

from ..config import NormaliseConfig, PipelineConfig
from ..media import MediaError, ProbeInfo, probe
from ..schema import VIDEO_FPS, ClipRecord
from .base import ClipFailure, Resources, Stage


def held_frames(frames) -> ProbeInfo:
    """What probe would say of in-memory 25 fps frames (ClipRecord.frames): a silent video of their size."""
    n, h, w = frames.shape[:3]
    return ProbeInfo(duration=n / VIDEO_FPS, width=w, height=h, fps=VIDEO_FPS, rotation=0, has_audio=False,
                     video_codec="rawvideo", audio_codec=None, audio_rate=None, frames=n, video_duration=n / VIDEO_FPS)


class ProbeStage(Stage):
    name = "probe"
    resources = Resources(cpus=0.1)   # one ffprobe call

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.normalise)

    def __init__(self, cfg: NormaliseConfig):
        self.cfg = cfg

    def outputs(self) -> list[str]:
        return ["probe", "span"]

    def process(self, record: ClipRecord) -> ClipRecord:
        try:
            info = probe(record.spec.path) if record.frames is None else held_frames(record.frames)
        except MediaError as err:
            raise ClipFailure(f"unreadable video: {err}") from None
        if info.width <= 0 or info.height <= 0:
            raise ClipFailure("video stream has no frame size")
        if info.duration <= 0:
            raise ClipFailure("video is empty (duration 0)")
        start = record.spec.start or 0.0
        end = record.spec.end if record.spec.end is not None else info.duration
        if start >= info.duration:
            raise ClipFailure(f"clip starts at {start:.2f} s, after the video ends ({info.duration:.2f} s)")
        if end > info.duration + 0.5:
            raise ClipFailure(f"clip ends at {end:.2f} s, past the video's end ({info.duration:.2f} s)")
        record.start, record.end = start, min(end, info.duration)
        if record.end - record.start < self.cfg.min_seconds:
            raise ClipFailure(f"too short: {record.end - record.start:.2f} s, below normalise.min_seconds "
                              f"({self.cfg.min_seconds:g} s)")
        record.probe = info.as_dict()
        return record
