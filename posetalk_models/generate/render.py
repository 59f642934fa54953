"""Frames from a trained generator run, and the mp4 they go into.

`render` drives the cascade frame by frame with the same windows the trainers cut (W motion rows and A speech rows
centred on each frame, clamped at the ends), in batches; `write_video` encodes H.264 at 25 fps and muxes the audio,
padded or cut to exactly the frames' length.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from posetalk_data.media import VideoWriter, mux_audio
from posetalk_data.schema import VIDEO_FPS

from posetalk_models.data.frames import rows
from posetalk_models.nets.cascade import Cascade


def source_tensor(frame: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB crop -> (1, 3, size, size) float in [-1, 1], resized as the trainers' decoder does."""
    if frame.shape[0] != size:
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).float()[None] / 127.5 - 1


@torch.no_grad()
def render(cascade: Cascade, source: torch.Tensor, source_pose: np.ndarray, motion: np.ndarray,
           speech: np.ndarray | None, *, windows: tuple[int, int], stage: str, batch: int = 16,
           progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n, S, S, 3) uint8 frames of `stage` ("coarse", "refine" or "enhance") for n = len(motion) frames.

    source (1, 3, S, S) in [-1, 1]; source_pose (7,); motion (n, 10); speech (n, D) or None; windows: (W, A)."""
    device = next(cascade.parameters()).device
    w, a = windows
    n = len(motion)
    out = np.empty((n, source.shape[-1], source.shape[-1], 3), np.uint8)
    pose = torch.as_tensor(source_pose, dtype=torch.float32, device=device)[None]
    for start in range(0, n, batch):
        idx = range(start, min(start + batch, n))
        m = torch.from_numpy(np.stack([rows(motion, i, w) for i in idx])).to(device)              # (b, W, 10)
        s = None if speech is None else torch.from_numpy(np.stack([rows(speech, i, a) for i in idx])).to(device)
        frames = cascade(source.to(device).expand(len(idx), -1, -1, -1), m, pose.expand(len(idx), -1), s)[stage]
        out[start:start + len(idx)] = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()
        if progress:
            progress(len(idx))
    return out


def write_video(frames: np.ndarray, out: str | Path, audio: str | Path | None = None, *, crf: int = 18) -> Path:
    """H.264 mp4 at 25 fps of (n, H, W, 3) uint8 frames, with `audio` muxed in (AAC) padded or cut to n / 25 s."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        silent = Path(tmp) / "video.mp4"
        with VideoWriter(silent, width=frames.shape[2], height=frames.shape[1], fps=VIDEO_FPS, crf=crf) as writer:
            for frame in frames:
                writer.write(frame)
        if audio is None:
            silent.replace(out)
            return out
        mux_audio(silent, audio, out, seconds=len(frames) / VIDEO_FPS)
    return out
