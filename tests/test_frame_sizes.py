"""The video generator's frames at any --size: decoded at the stored crop size and resized (members.mp4_frames), since
decord's own scaled decoding fails at some sizes (48 px from a 64 px crop)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from posetalk_data.members import mp4_frames
from posetalk_data.reading import read_samples
from posetalk_models.data.frames import FrameConfig, frame_loader

SIZE = 48    # video_build's crops are 64 px


def test_frames_at_a_size_decord_cannot_scale_to(video_build):
    import decord

    _, sample = next(read_samples(video_build / "train.json"))
    with pytest.raises(decord.DECORDError):     # the premise: what the reader used to do fails at this size
        decord.VideoReader(io.BytesIO(sample["video.mp4"]), width=SIZE, height=SIZE,
                           num_threads=1).get_batch([0]).asnumpy()
    cfg = FrameConfig(size=SIZE, targets=2, resample=False)
    batch = next(iter(frame_loader(video_build / "train.json", cfg, batch_size=2)))
    assert batch["source"].shape == (2, 3, SIZE, SIZE) and batch["target"].shape == (2, 2, 3, SIZE, SIZE)
    assert batch["lip_mask"].shape == (2, 2, 1, SIZE, SIZE)
    # the pixels are the stored frames, resized: not blank, and close to an independent resize of frame 0
    full = mp4_frames(sample["video.mp4"], [0])[0].astype(np.float64)
    small = mp4_frames(sample["video.mp4"], [0], SIZE)[0].astype(np.float64)
    assert small.std() > 10
    assert abs(small.mean() - full.mean()) < 2
