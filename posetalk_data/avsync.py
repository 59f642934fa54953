"""Audio-video offset of a talking clip from its lips and its speech: plain functions of arrays, no weights.

Method ("lips-envelope"). The mouth opens as the voice gets louder in the band where the mouth shapes it, so the
two signals rise and fall together:
- lips: outer-lip height (MediaPipe points 0 and 17) over the distance of the outer eye corners (33, 263), per
  frame: a face-size-free opening that head turns change little;
- speech: log energy in 1-4 kHz (the second formant, where lip rounding and opening show) of an 80 ms Hann window
  centred on each 25 fps frame, floored at its 20th percentile so pauses are one level, not the noise floor.
Both are detrended (minus a 1 s moving average: the syllable rhythm stays, slow drifts go) and smoothed over three
frames, then correlated (Pearson) at every lag in +-search frames. The lips' window is fixed; the speech window
slides over audio read around the clip, so every lag sees the same number of frames.

Sign convention: the offset is how many frames the audio is LATE. `offset > 0`: a sound belonging to frame t is
heard at frame t + offset, so the corrected audio is the source's samples from `offset` frames further on.

Confidence: the peak correlation as a z-score, atanh(r) * sqrt(n_eff - 3), with n_eff the clip's frame count
shrunk by the two signals' autocorrelation (Bartlett): about how many standard errors the peak stands above what
unrelated lips and speech give. It grows with the clip's length; a few seconds of real talking give 2.5-5.5, lips
against someone else's speech 1.8 (median; 90 % below 2.6). See README "Audio-video offset".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPS = 25
RATE = 16_000
HOP = RATE // FPS                 # 640 samples per video frame
WINDOW = 2 * HOP                  # 80 ms analysis window, centred on the frame
BAND_HZ = (1000.0, 4000.0)
FLOOR_PERCENTILE = 20
DETREND_FRAMES = 25               # 1 s
SMOOTH_FRAMES = 3
METHOD = "lips-envelope"
VERSION = (f"{METHOD} v1: outer-lip height / eye-corner distance against log {BAND_HZ[0]:g}-{BAND_HZ[1]:g} Hz "
           f"energy (80 ms Hann per frame), {DETREND_FRAMES}-frame detrend, Pearson r per lag, "
           "confidence atanh(r) * sqrt(n_eff - 3) (Bartlett n_eff)")
LIP_TOP, LIP_BOTTOM, EYE_OUTER = 0, 17, (33, 263)


@dataclass(frozen=True)
class SyncMeasure:
    offset: int | None            # frames the audio is late (None: nothing to correlate, e.g. silence)
    confidence: float             # z-score of the peak correlation (0 where there is no measure)
    peak_r: float                 # the peak correlation itself
    scores: np.ndarray            # r per lag, -search..+search


def lip_height(mesh: np.ndarray) -> np.ndarray:
    """(T, 478, >=2) MediaPipe mesh in any one scale -> (T,) outer-lip height over the outer-eye-corner distance."""
    m = np.asarray(mesh, dtype=np.float64)[..., :2]
    eyes = np.linalg.norm(m[:, EYE_OUTER[0]] - m[:, EYE_OUTER[1]], axis=-1)
    return np.linalg.norm(m[:, LIP_TOP] - m[:, LIP_BOTTOM], axis=-1) / np.maximum(eyes, 1e-9)


def speech_envelope(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """16 kHz mono samples starting at frame 0 -> (n_frames,) log 1-4 kHz energy, one value per 25 fps frame
    (zero-padded past the end)."""
    a = np.asarray(audio, dtype=np.float64).reshape(-1)[: n_frames * HOP]
    a = np.pad(a, (WINDOW // 2 - HOP // 2, n_frames * HOP - len(a) + WINDOW))    # window centred on the frame
    frames = np.lib.stride_tricks.sliding_window_view(a, WINDOW)[::HOP][:n_frames]
    freqs = np.fft.rfftfreq(WINDOW, 1 / RATE)
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    power = np.abs(np.fft.rfft(frames * np.hanning(WINDOW), axis=1)[:, band]) ** 2
    return np.log(power.sum(1) + 1e-6)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def rhythm(x: np.ndarray) -> np.ndarray:
    """The syllable-rate part of a per-frame signal: minus its 1 s moving average, smoothed over three frames."""
    x = np.asarray(x, dtype=np.float64)
    return _moving_average(x - _moving_average(x, DETREND_FRAMES), SMOOTH_FRAMES)


def lagged_r(lips: np.ndarray, speech: np.ndarray, search: int) -> np.ndarray:
    """Pearson r of lips (T,) against speech[search + k : search + k + T] for k in -search..search; speech has
    T + 2 * search frames (it starts `search` frames before the clip). NaN where either side is constant."""
    t = len(lips)
    windows = np.lib.stride_tricks.sliding_window_view(speech, t)[: 2 * search + 1]
    v = lips - lips.mean()
    w = windows - windows.mean(1, keepdims=True)
    denom = np.sqrt((v @ v) * np.einsum("ij,ij->i", w, w))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 1e-12, w @ v / denom, np.nan)


def effective_frames(a: np.ndarray, b: np.ndarray) -> float:
    """Bartlett's effective sample size of a correlation between two autocorrelated series of equal length."""
    n = len(a)
    lags = max(1, min(n // 4, 25))
    a, b = a - a.mean(), b - b.mean()
    return n / max(1.0, 1 + 2 * float(np.dot(_autocorrelation(a, lags), _autocorrelation(b, lags))))


def _autocorrelation(x: np.ndarray, lags: int) -> np.ndarray:
    """Lags 1..lags-1 of a centred series."""
    n = len(x)
    return np.array([np.dot(x[: n - k], x[k:]) for k in range(1, lags)]) / max(float(np.dot(x, x)), 1e-12)


def measure(lip: np.ndarray, audio: np.ndarray, search: int) -> SyncMeasure:
    """Offset and confidence of a clip: lip (T,) from lip_height; audio: its 16 kHz samples from `search` frames
    before the clip's first frame to `search` frames after its last (silence where the source has none)."""
    t = len(lip)
    envelope = speech_envelope(audio, t + 2 * search)
    envelope = np.maximum(envelope, np.percentile(envelope, FLOOR_PERCENTILE))
    lips, speech = rhythm(lip), rhythm(envelope)
    scores = lagged_r(lips, speech, search)
    if t < 3 or not np.isfinite(scores).any():
        return SyncMeasure(None, 0.0, float("nan"), scores)
    best = int(np.nanargmax(scores))
    r = float(np.clip(scores[best], -0.999, 0.999))
    n_eff = effective_frames(lips, speech[best: best + t])
    return SyncMeasure(best - search, float(np.arctanh(r) * np.sqrt(max(n_eff - 3, 1.0))), r, scores)


def speech_share(audio: np.ndarray, n_frames: int, silence_dbfs: float) -> float:
    """Share of the clip's frames with sound: louder than silence_dbfs and within 30 dB of its loud frames (95th
    percentile). Any sound counts (it is a level, not a voice detector); for a clip of talking, the speech."""
    a = np.asarray(audio, dtype=np.float64).reshape(-1)[: n_frames * HOP]
    a = np.pad(a, (0, n_frames * HOP - len(a))).reshape(n_frames, HOP)
    level = 10 * np.log10(np.mean(a * a, axis=1) + 1e-12)
    return float(np.mean((level > silence_dbfs) & (level > np.percentile(level, 95) - 30))) if n_frames else 0.0


def mouth_motion(lip: np.ndarray) -> float:
    """How far the mouth moves over the clip: 95th minus 5th percentile of lip_height (a talking mouth: 0.1-0.3)."""
    return float(np.percentile(lip, 95) - np.percentile(lip, 5)) if len(lip) else 0.0
