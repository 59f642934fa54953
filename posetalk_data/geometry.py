"""Head-pose geometry: plain functions of arrays (gaze, built on it, is in posetalk_data.gaze).

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

from dataclasses import dataclass
from pathlib import Path

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


# ---------------------------------------------------------------- landmarks, template, pose fit
TEMPLATE_PATH = Path(__file__).with_name("assets") / "face_template_mediapipe478.npy"

# MediaPipe indices. "Image-left" is the subject's right eye (MediaPipe's RIGHT_*) in a non-mirrored image.
EYE_CORNERS = ((33, 133), (362, 263))  # (outer, inner) of the image-left eye, (inner, outer) of the image-right eye
IRIS = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))  # centre + 4 contour points, image-left then right

# Points that move little relative to the head: nose bridge and sides of the nose, the rim below the eyes, eye
# corners. Picked as the 40 landmarks with the smallest head-frame wobble over 7 talking clips in shared/samples
# (videos/ + edge/d13, d18; not the validation clip), minus 4 on the lower-lid contour, plus the 4 eye corners,
# closed under left/right mirroring. Forehead and temple points (often under hair) and cheek points were tried and
# gave worse pitch on the validation clip. Pairs (image-left, image-right), then midline points.
RIGID_INDICES = np.array(sorted({
    33, 263, 133, 362, 226, 446, 244, 464, 245, 465, 3, 248, 47, 277, 114, 343, 121, 350, 122, 351, 128, 357,
    174, 399, 188, 412, 193, 417, 196, 419, 217, 437, 232, 452, 233, 453, 236, 456,
    6, 168, 197,
}))


def landmarks_to_face_frame(points_px: np.ndarray) -> np.ndarray:
    """(..., N, 3) landmarks in pixels (u right, v down, z = MediaPipe z * width) -> face frame (u, -v, -z)."""
    return np.asarray(points_px, dtype=np.float64) * np.array([1.0, -1.0, -1.0])


def load_face_template() -> np.ndarray:
    """(478, 3) frontal MediaPipe face in the face frame: zero rotation, symmetric about x = 0, centroid at the
    origin, unit = distance between the two eye centres (midpoints of each eye's corners). See the .json."""
    return np.load(TEMPLATE_PATH).astype(np.float64)


def eye_centres(points: np.ndarray) -> np.ndarray:
    """(..., 478, 3) -> (..., 2, 3) midpoints of each eye's two corners (image-left eye first)."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack([(p[..., a, :] + p[..., b, :]) / 2 for a, b in EYE_CORNERS], -2)


def _similarity_fit(src: np.ndarray, dst: np.ndarray):
    """Umeyama: per frame s, R, t minimising |dst - (s R src + t)|^2. src (N,3) or (T,N,3), dst (T,N,3)."""
    mu_s, mu_d = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = np.swapaxes(xd, -1, -2) @ xs / src.shape[-2]
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones_like(sig)
    d[..., 2] = np.sign(np.linalg.det(u @ vt))  # no reflections
    rot = (u * d[..., None, :]) @ vt
    scale = (sig * d).sum(-1) / (xs**2).sum((-1, -2)) * src.shape[-2]
    trans = mu_d[..., 0, :] - scale[..., None] * (rot @ mu_s[..., 0, :, None])[..., 0]
    return rot, scale, trans


@dataclass
class HeadPoseFit:
    """Per-frame similarity from the template to the landmarks (NaN where a frame had no face)."""

    rotation: np.ndarray  # (T, 3, 3): points ~ scale * rotation @ template + translation
    scale: np.ndarray  # (T,) face-frame units per template unit
    translation: np.ndarray  # (T, 3)
    rms: np.ndarray  # (T,) residual on the fitted points, template units


def fit_head_pose(points: np.ndarray, template: np.ndarray, indices=RIGID_INDICES) -> HeadPoseFit:
    """Similarity fit of the template to (T, 478, 3) face-frame landmarks, per frame. Frames with NaN -> NaN."""
    p = np.asarray(points, dtype=np.float64)[..., indices, :]
    p = p[None] if p.ndim == 2 else p
    src = np.asarray(template, dtype=np.float64)[indices]
    t_len = p.shape[0]
    rot, scale = np.full((t_len, 3, 3), np.nan), np.full(t_len, np.nan)
    trans, rms = np.full((t_len, 3), np.nan), np.full(t_len, np.nan)
    ok = np.isfinite(p).all((-1, -2))
    if ok.any():
        r, s, t = _similarity_fit(src, p[ok])
        res = p[ok] - (s[:, None, None] * (src @ np.swapaxes(r, -1, -2)) + t[:, None])
        rot[ok], scale[ok], trans[ok] = r, s, t
        rms[ok] = np.sqrt((res**2).sum(-1).mean(-1)) / s
    return HeadPoseFit(rot, scale, trans, rms)


def _normalise(shape: np.ndarray, idx) -> np.ndarray:
    c = shape - shape[idx].mean(0)
    return c / np.sqrt((c[idx] ** 2).sum(-1).mean())


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector a to unit vector b (Rodrigues)."""
    v, c = np.cross(a, b), float(a @ b)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def mirror_permutation(shape: np.ndarray) -> np.ndarray:
    """perm such that shape[perm] is the left/right counterpart of each point (midline points map to themselves),
    for a roughly frontal face-frame shape. Alternates: match each point to the nearest point of the mirror image
    (one-to-one), then turn the shape so the plane those pairs define is x = 0. Starts from the principal axis
    nearest x, which is the plane's normal for a symmetric point cloud, so a tilted head does not matter."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist
    m, perm = shape - shape.mean(0), None
    axes = np.linalg.eigh(m.T @ m)[1]
    n = axes[:, np.argmax(np.abs(axes[0]))]
    m = m @ _rotation_between(n * np.sign(n[0]), np.array([1.0, 0, 0])).T
    for _ in range(10):
        new = linear_sum_assignment(cdist(m, m * [-1.0, 1.0, 1.0]))[1]
        if perm is not None and (new == perm).all():
            break
        perm = new
        m = _to_symmetry_plane(m, perm)
    if not (perm[perm] == np.arange(len(perm))).all():
        raise ValueError("left/right matching is not an involution: landmark sets too far from frontal?")
    return perm


def _to_symmetry_plane(shape: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Rotate (about y and z) and shift so the plane of symmetry given by the pairs is x = 0."""
    d = shape - shape[perm]  # parallel to the plane normal for a symmetric shape
    n = np.linalg.eigh(d.T @ d)[1][:, -1]
    m = (shape - shape.mean(0)) @ _rotation_between(n * np.sign(n[0]), np.array([1.0, 0, 0])).T
    return m - [m[:, 0].mean(), 0, 0]


def _symmetrise(shape: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Symmetry plane to x = 0, then average each point with its mirror image."""
    m = _to_symmetry_plane(shape, perm)
    return (m + (m * [-1.0, 1.0, 1.0])[perm]) / 2


def _procrustes_mean(shapes: np.ndarray, indices, iters: int = 50) -> np.ndarray:
    """Generalised Procrustes: similarity-align (K, N, 3) shapes on `indices` to their mean until it settles."""
    ref = shapes[0]
    for _ in range(iters):
        r, s, t = _similarity_fit(ref[indices], shapes[:, indices])  # ref -> each shape; invert it below
        new = _normalise((((shapes - t[:, None]) @ r) / s[:, None, None]).mean(0), indices)
        if np.abs(new - ref).max() < 1e-10:
            break
        ref = new
    return ref


PITCH_LINE = (168, 2)  # nasion (between the eyes) -> subnasale (base of the nose)


def _level_pitch(shape: np.ndarray) -> np.ndarray:
    """Pitch zero: rotate about x so the nasion -> subnasale line lies in the image plane (vertical, no depth)."""
    v = shape[PITCH_LINE[1]] - shape[PITCH_LINE[0]]
    return shape @ _rx(np.arctan2(v[2], -v[1])).T


def derive_face_template(landmark_sets: list[np.ndarray], indices=RIGID_INDICES) -> np.ndarray:
    """(478, 3) symmetric frontal template from face-frame MediaPipe landmark sets of frontal-ish faces.

    Procrustes mean (similarity, on the rigid points); left/right pairs from it (mirror_permutation); Procrustes
    mean again over the sets and their mirror images; exact symmetrisation with the symmetry plane at x = 0
    (yaw = roll = 0); pitch zero = nasion -> subnasale line vertical (_level_pitch); centroid at the origin;
    unit = distance between the eye centres. Non-rigid points (mouth, lids, irises) are plain means after alignment.
    """
    shapes = np.stack([_normalise(np.asarray(s, dtype=np.float64), indices) for s in landmark_sets])
    perm = mirror_permutation(_procrustes_mean(shapes, indices))
    both = np.concatenate([shapes, (shapes * [-1.0, 1.0, 1.0])[:, perm]])  # mirrored copies: symmetric mean
    m = _level_pitch(_symmetrise(_procrustes_mean(both, indices), perm))
    m = m - m.mean(0)
    return m / np.linalg.norm(np.diff(eye_centres(m), axis=0))


# ---------------------------------------------------------------- smoothing
def smooth_zero_phase(x: np.ndarray, fps: float, window_s: float = 0.2) -> np.ndarray:
    """Centred Savitzky-Golay (quadratic) smoothing of a (T, D) or (T,) track: no lag, peaks stay in place.
    Windows shrink to fit short tracks; NaN gaps are bridged linearly then restored. Angles are smoothed as plain
    numbers, which is exact as long as they do not wrap (|angle| < 180, and our angles stay within +-90)."""
    from scipy.signal import savgol_filter
    y = np.array(x, dtype=np.float64)
    win = min(int(round(window_s * fps)) // 2 * 2 + 1, (len(y) - 1) // 2 * 2 + 1)
    if win < 5:  # too short for a quadratic fit to smooth anything
        return y
    flat = y.reshape(len(y), -1)
    bad = ~np.isfinite(flat)
    t = np.arange(len(y))
    for d in range(flat.shape[1]):
        good = ~bad[:, d]
        if good.sum() < 2:
            continue
        col = np.interp(t, t[good], flat[good, d])
        flat[:, d] = np.where(good, savgol_filter(col, win, 2, mode="interp"), np.nan)
    return flat.reshape(y.shape)
