"""What drives a generated video, frame by frame, in PoseTalk's three pose modes.

Every mode yields the generator's motion channels (posetalk_models.data.frames): (n, 10) yaw, pitch, roll, the two eyes'
gaze yaw/pitch (degrees), then dx, dy, dlog_s of the face relative to the portrait (face-scale units). The portrait
is the source frame, so a motion taken from elsewhere (a reference video, the PLD) is applied *relative* to it: the
portrait's own angles plus the change since the motion's first frame, and the movement since that frame.

- fixed: the portrait's pose and gaze held; optionally a little smooth natural motion (off by default)
- reference: another video's pose and gaze (through the extraction stages), cut or looped (forwards then backwards,
  so the loop has no jump) to the audio's length
- generated: the PLD's pose and gaze from the speech and a text prompt
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from posetalk_models.generate.faces import FaceTrack


def relative(portrait: FaceTrack, angles: np.ndarray, movement: np.ndarray) -> np.ndarray:
    """(n, 7) angles and (n, 3) movement of some motion -> (n, 10) generator motion starting at the portrait."""
    start = portrait.angles()[0]
    return np.concatenate([start + angles - angles[0], movement - movement[0]], 1).astype(np.float32)


def fixed(portrait: FaceTrack, n: int, *, natural_deg: float = 0.0, seed: int = 0) -> np.ndarray:
    """The portrait held for n frames; natural_deg > 0 adds slow, smooth head motion of that std (degrees) and half
    of it to the gaze, the same for a seed."""
    angles = np.repeat(portrait.angles(), n, 0)
    if natural_deg > 0:
        rng = np.random.default_rng(seed)
        drift = gaussian_filter1d(rng.standard_normal((n + 50, 7)), sigma=12, axis=0, mode="wrap")[:n]
        drift /= np.maximum(drift.std(0, keepdims=True), 1e-6)
        angles = angles + drift * natural_deg * np.array([1, 1, 0.5, 0.5, 0.5, 0.5, 0.5])
    return relative(portrait, angles, np.zeros((n, 3), np.float32))


def looped(sequence: np.ndarray, n: int) -> np.ndarray:
    """The first n rows, the sequence played forwards then backwards as often as needed (no jump at the seam)."""
    if len(sequence) >= n:
        return sequence[:n]
    bounce = np.concatenate([sequence, sequence[-2:0:-1]]) if len(sequence) > 2 else sequence
    return np.concatenate([bounce] * (n // len(bounce) + 1))[:n]


def reference(portrait: FaceTrack, track: FaceTrack, n: int) -> np.ndarray:
    """A reference video's face track applied to the portrait, cut or looped to n frames."""
    return relative(portrait, looped(track.angles(), n), looped(track.movement(), n))


def generated(portrait: FaceTrack, poses: np.ndarray) -> np.ndarray:
    """(n, 10) PLD output (posetalk_models.data.windows.CHANNELS; translation relative to its first frame) applied to the
    portrait."""
    return relative(portrait, poses[:, :7], poses[:, 7:10] if poses.shape[1] >= 10 else np.zeros((len(poses), 3)))
