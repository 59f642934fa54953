"""Head-pose and gaze geometry: plain functions of arrays.

Coordinate frame used everywhere in posetalk (the "face frame"): right-handed, x to the image's right,
y to the image's top, z towards the camera. Landmarks in image pixels (u right, v down, MediaPipe z negative
towards the camera) map to it as (u, -v, -z).

Angles are in degrees and defined by what a viewer sees:
- yaw > 0: the nose moves towards the image's right;
- pitch > 0: the nose moves up (the person looks up);
- roll > 0: the head tilts counter-clockwise as displayed (the eye on the image's right moves up).

A rotation is composed as R = Rz(roll) @ Rx(-pitch) @ Ry(yaw) and applied to column vectors of the frontal face.
"""
from __future__ import annotations

import numpy as np


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*np.shape(a), 3, 3)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*np.shape(a), 3, 3)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*np.shape(a), 3, 3)


def euler_to_rotation(yaw_pitch_roll_deg: np.ndarray) -> np.ndarray:
    """(..., 3) yaw, pitch, roll in degrees -> (..., 3, 3) rotation matrices."""
    a = np.deg2rad(np.asarray(yaw_pitch_roll_deg, dtype=np.float64))
    yaw, pitch, roll = a[..., 0], a[..., 1], a[..., 2]
    return _rz(roll) @ _rx(-pitch) @ _ry(yaw)


def rotation_to_euler(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) yaw, pitch, roll in degrees (inverse of euler_to_rotation)."""
    r = np.asarray(rotation, dtype=np.float64)
    # R = Rz(c) Rx(-b) Ry(a): R[2,1] = -sin(b), R[2,0] = -cos(b) sin(a), R[2,2] = cos(b) cos(a),
    # R[0,1] = -sin(c) cos(b), R[1,1] = cos(c) cos(b)
    pitch = np.arcsin(np.clip(-r[..., 2, 1], -1.0, 1.0))
    yaw = np.arctan2(-r[..., 2, 0], r[..., 2, 2])
    roll = np.arctan2(-r[..., 0, 1], r[..., 1, 1])
    return np.rad2deg(np.stack([yaw, pitch, roll], -1))
