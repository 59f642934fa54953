"""Stage 2, normalise: 16 kHz mono audio for the clip's span, and the constant-25-fps video plan.

The video is normalised on read (`video_frames`): ffmpeg applies the rotation metadata and its fps filter while
decoding, so no intermediate video is written and every later pass sees the same 25 fps frames. Audio from the
video's own track is only planned here: the first decode of the video (facetrack's) writes it in the same ffmpeg
process, one process a video less (a tenth of a second of CPU each: much of a short clip's cost). `audio_file`
writes it where that decode did not (it failed, or a pipeline has none) before a stage reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..config import NormaliseConfig, PipelineConfig
from ..media import MediaError, extract_audio, has_audio, read_frames
from ..schema import ClipRecord
from .base import ClipFailure, Resources, Stage


@dataclass(frozen=True)
class AudioPlan:
    """The video span's audio, not written yet: the span of `source` (the video itself) at `rate`."""
    source: Path
    start: float
    duration: float
    rate: int


def video_frames(record: ClipRecord, fps: int = 25, size: tuple[int, int] | None = None, *,
                 with_audio: bool = False) -> Iterator[np.ndarray]:
    """The record's span of its source video as constant-fps RGB frames (rotation applied), at full size or scaled
    to `size` (width, height) by the decoder. One decoder thread: a build runs one worker per core, and frame
    threads there only add CPU (about a tenth more at 1080p) and contend with the other workers. with_audio: this
    decode also writes the planned audio (record.audio_plan), once every frame is read."""
    if record.frames is not None:       # frames held in memory (ClipRecord.frames, 25 fps): the span's, no decode
        held = record.frames[round(record.start * fps):round(record.end * fps)]
        return iter(held) if size is None else (cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in held)
    plan = record.audio_plan if with_audio else None
    return read_frames(record.spec.path, fps=fps, start=record.start, duration=record.end - record.start,
                       size=size, probed=(record.probe["width"], record.probe["height"]), threads=1,
                       audio=(record.audio, plan.rate) if plan else None)


def audio_file(record: ClipRecord) -> Path:
    """The clip's audio file, written now if it is still only planned (the video's decode did not write it)."""
    if record.audio_plan is not None and not record.audio.exists():
        write_audio(record.audio_plan, record.audio)
    return record.audio


def write_audio(plan: AudioPlan, out: Path) -> None:
    """The planned span's audio extracted to `out` now; a failure is the clip's, with ffmpeg's reason."""
    try:
        extract_audio(plan.source, out, rate=plan.rate, start=plan.start, duration=plan.duration)
    except MediaError as err:
        raise ClipFailure(f"audio: {err}") from None


def audio_source(record: ClipRecord, wav_beside: bool) -> Path | None:
    """Where the clip's audio comes from: an adapter-given file, the video's own track, or <name>.wav beside it."""
    if record.spec.audio_path:
        return Path(record.spec.audio_path)
    if record.probe.get("has_audio"):
        return Path(record.spec.path)
    beside = Path(record.spec.path).with_suffix(".wav")
    if wav_beside and beside.is_file():
        return beside
    return None


class NormaliseStage(Stage):
    name = "normalise"
    resources = Resources(cpus=1)   # one ffmpeg audio decode/resample

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.normalise)

    def __init__(self, cfg: NormaliseConfig):
        self.cfg = cfg

    def inputs(self) -> list[str]:
        return ["probe", "span"]

    def outputs(self) -> list[str]:
        return ["audio"]

    def process(self, record: ClipRecord) -> ClipRecord:
        source = audio_source(record, self.cfg.wav_beside)
        if source is None:
            raise ClipFailure("no audio: the video has no audio stream and there is no same-name .wav beside it")
        if source != Path(record.spec.path):
            try:
                if not has_audio(source):
                    raise ClipFailure(f"no audio stream in {source.name}")
            except MediaError as err:
                raise ClipFailure(f"unreadable audio file {source.name}: {err}") from None
        record.audio = record.workdir / "audio.wav"
        # A separate audio file starts with the video, so the same span applies to both.
        plan = AudioPlan(source, record.start, record.end - record.start, self.cfg.audio_rate)
        if source == Path(record.spec.path) and record.frames is None:
            record.audio_plan = plan            # written by the video's first decode (facetrack), else audio_file
        else:
            write_audio(plan, record.audio)
        record.meta["audio_source"] = "video" if source == Path(record.spec.path) else source.name
        return record
