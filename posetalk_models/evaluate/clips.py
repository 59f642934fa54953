"""What posetalk-eval scores: the test manifest's clips (the real frames at the evaluation size, the first frame as
the generator's source, the clip's own audio, motion and speech features) and other methods' videos of them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posetalk_data.media import read_frames
from posetalk_data.members import flac_samples, mp4_frames, resize_frames
from posetalk_data.reading import read_samples
from posetalk_data.schema import VIDEO_FPS

from posetalk_models.data.frames import crop_motion
from posetalk_models.data.stream import npy


@dataclass
class Clip:
    key: str
    source: np.ndarray          # (C, C, 3) uint8: the first frame at the stored crop size C (the generator's input)
    real: np.ndarray            # (T, S, S, 3) uint8 at the evaluation size
    audio: np.ndarray           # 16 kHz float
    motion: np.ndarray          # (T, 10) crop-space motion relative to frame 0
    speech: np.ndarray | None   # (T, D) the manifest's speech features


def clips(manifest: str | Path, size: int, speech: str | None, limit: int | None, max_frames: int | None):
    """The test manifest's clips at the evaluation size, in key order."""
    for i, (key, sample) in enumerate(read_samples(manifest)):
        if limit is not None and i >= limit:
            return
        pose, gaze, landmarks = npy(sample["pose.npy"]), npy(sample["gaze.npy"]), npy(sample["landmarks.npy"])
        t = len(pose) if max_frames is None else min(len(pose), max_frames)
        stored = mp4_frames(sample["video.mp4"], list(range(t)))    # at the stored size, resized below
        audio = flac_samples(sample["audio.flac"])[: round(t / VIDEO_FPS * 16000)]
        features = npy(sample[f"{speech}.npy"]).astype(np.float32)[:t] if speech else None
        yield Clip(key, stored[0], resize_frames(stored, size), audio, crop_motion(pose, gaze, landmarks, 0)[:t], features)


def load_video(path: Path, size: int, frames: int) -> np.ndarray:
    """Up to `frames` frames of another method's video at 25 fps, resized to size x size."""
    out = []
    for frame in read_frames(path, fps=VIDEO_FPS, size=(size, size)):
        out.append(frame)
        if len(out) == frames:
            break
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
