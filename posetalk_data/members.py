"""A sample's media members as bytes and back, in-process: the clip's audio as FLAC (PyAV), its video.mp4 as frames
(decord), arrays as .npy. No ffmpeg process is started here (posetalk_data.media runs those)."""
from __future__ import annotations

import io

import numpy as np


def flac_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Mono samples (float in -1..1 as read_wav gives them) as FLAC bytes, encoded in-process (PyAV)."""
    import av

    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32768), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        out.flags |= av.container.Flags.bitexact.value
        stream = out.add_stream("flac", rate=rate, layout="mono")
        stream.format = "s16"
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def flac_samples(data: bytes) -> np.ndarray:
    """FLAC bytes (a shard's audio.flac) -> float32 mono samples in -1..1, as read_wav gives them; in-process."""
    import av

    with av.open(io.BytesIO(data), "r") as container:
        parts = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    pcm = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    return pcm.astype(np.float32) / 32768.0


def mp4_frames(data: bytes, indices: list[int] | None = None, size: int | None = None) -> np.ndarray:
    """(n, h, w, 3) uint8 RGB frames of a video held in memory (a shard's video.mp4): all, or `indices` (each
    decoded once, in stream order). `size`: resized to size x size after decoding at the stored size (decord's
    own scaling fails at some sizes, e.g. 48 px)."""
    import decord

    reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
    wanted = sorted(set(range(len(reader)) if indices is None else indices))
    frames = reader.get_batch(wanted).asnumpy()
    if indices is not None:
        frames = frames[np.searchsorted(wanted, indices)]
    return frames if size is None else resize_frames(frames, size)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3): area averaging down, bicubic up; the frames themselves at their size."""
    import cv2

    if frames.shape[1:3] == (size, size):
        return frames
    interpolation = cv2.INTER_AREA if size < frames.shape[1] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interpolation) for f in frames])


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
