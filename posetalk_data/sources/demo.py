"""Demo source: a few talking-head clips generated offline with a KNOWN head rotation.

Real portraits that ship inside installed packages (scikit-image's astronaut, matplotlib's Grace Hopper) are
animated by rotating their MediaPipe FaceMesh landmarks in 3D about a head centre and warping the photo piecewise
affinely onto the rotated landmarks; the mouth opens with a synthetic speech-like audio track. The applied rotation
(yaw, pitch, roll in the face-frame convention of `posetalk_data.geometry`) is saved as ground truth, so the pose
stage can be checked end to end on a fresh machine without downloads. The eyes move too, with a known eye-in-head
rotation and known blinks (posetalk_data.sources.demo_eyes), saved beside the pose as ground truth for the gaze.
"""
from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.io import wavfile
from scipy.signal import lfilter
from scipy.spatial import Delaunay

from posetalk_data.geometry import euler_to_rotation, landmarks_to_face_frame
from posetalk_data.sources.demo_eyes import EyeRenderer, blink_frames, gaze_sequence

SAMPLE_RATE = 16_000
NOSE_TIP, CHEEK_R, CHEEK_L = 1, 234, 454  # MediaPipe FaceMesh indices (subject's right/left cheek)
INNER_CORNERS = (78, 308)
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_INNER = [95, 88, 178, 87, 14, 317, 402, 318, 324]  # corner to corner, corners excluded
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
LOWER_LIP = LOWER_INNER + [146, 91, 181, 84, 17, 314, 405, 321, 375]


@dataclass(frozen=True)
class DemoClip:
    name: str  # e.g. "astronaut_yaw"
    video: Path  # mp4, H.264 + AAC, constant frame rate
    pose: Path  # .npy float32 (T, 3): yaw, pitch, roll in degrees per frame, relative to the rest portrait
    gaze: Path  # .npy float32 (T, 4): each eye's yaw, pitch (deg) in the head as gaze.npy; NaN rows = eyes shut


GAZE_SEED = 7  # the eye motion and blinks of clip i come from default_rng([GAZE_SEED, i])
# name, portrait, (yaw, pitch, roll) as (amplitude deg, period s); every term is a sine so frame 0 is the rest pose.
CLIPS = [
    ("astronaut_yaw", "astronaut", [(18, 2.0), (0, 1), (0, 1)]),
    ("grace_nod", "grace_hopper", [(0, 1), (12, 1.6), (0, 1)]),
    ("astronaut_tilt", "astronaut", [(0, 1), (0, 1), (15, 2.5)]),
    ("grace_mixed", "grace_hopper", [(15, 3.1), (8, 1.7), (8, 2.3)]),
]


# ---------------------------------------------------------------- portraits and landmarks
def _load_portrait(name: str) -> np.ndarray:
    if name == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _face_mesh(rgb: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks in the face frame, pixels: x = u, y = -v, z = -z_mp * W (towards the camera)."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(np.ascontiguousarray(rgb))
    if not res.multi_face_landmarks:
        raise RuntimeError("no face found in demo portrait")
    h, w = rgb.shape[:2]
    lm = np.array([[p.x, p.y, p.z] for p in res.multi_face_landmarks[0].landmark], dtype=np.float64)
    return landmarks_to_face_frame(lm * [w, h, w])


@functools.lru_cache(maxsize=8)
def _portrait(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around the face (with hair and shoulders), resized to `size`, and its landmarks."""
    img = _load_portrait(name)
    lm = _face_mesh(img)
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)  # x right, y up
    cx, cy = (lo + hi) / 2 + [0, 0.15 * (hi[1] - lo[1])]  # shift up a little for the hair
    half = 1.15 * (hi - lo).max()
    x0, y0 = int(round(cx - half)), int(round(-cy - half))
    side = int(round(2 * half))
    pad = max(0, -x0, -y0, x0 + side - img.shape[1], y0 + side - img.shape[0])
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)  # only if the box leaves the photo
    crop = img[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)
    return crop, _face_mesh(crop)  # re-detect at the output resolution for accurate landmarks


# ---------------------------------------------------------------- animation
def _anchors(lm: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Points that let the warp fade out: an inner ring around the head (rotates with it, so hair and hats
    follow) and an outer ring plus the image border (fixed, so the background stays put)."""
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    up = np.sin(ang) > 0

    def ring(sx: float, s_up: float, s_down: float) -> np.ndarray:  # taller above the face for hair
        return centre + np.stack([np.cos(ang) * sx, np.sin(ang) * np.where(up, s_up, s_down)], -1) * half

    edge = np.linspace(0, size - 1, 9)
    border = np.concatenate([np.stack([edge, np.full(9, v)], -1) for v in (0, -(size - 1))]
                            + [np.stack([np.full(7, u), -edge[1:-1]], -1) for u in (0, size - 1)])
    lo_lim, hi_lim = [3, -(size - 4)], [size - 4, -3]  # keep the rings strictly inside the border
    inner = np.clip(ring(1.35, 1.85, 1.3), lo_lim, hi_lim)
    outer = np.clip(ring(2.0, 2.5, 2.0), lo_lim, hi_lim)
    return inner, np.concatenate([outer, border])


def _mouth_weights(lm: np.ndarray) -> np.ndarray:
    """How much each landmark follows the jaw when the mouth opens: the lower lip (tapering to the corners) and
    the chin fully, other points by how far they lie below the upper lip, fading sideways."""
    face_w = np.linalg.norm(lm[CHEEK_L] - lm[CHEEK_R])
    upper = lm[UPPER_INNER]
    order = np.argsort(upper[:, 0])
    y_upper = np.interp(lm[:, 0], upper[order, 0], upper[order, 1])  # the upper lip line at each x
    t = np.clip((y_upper - lm[:, 1]) / (0.1 * face_w), 0, 1)
    x_m, half_w = lm[list(INNER_CORNERS), 0].mean(), np.ptp(lm[list(INNER_CORNERS), 0]) / 2
    w = t * t * (3 - 2 * t) * np.exp(-(((lm[:, 0] - x_m) / (0.4 * face_w)) ** 4))
    w[LOWER_LIP] = np.clip(1 - ((lm[LOWER_LIP, 0] - x_m) / half_w) ** 2, 0, 1)
    w[UPPER_INNER + UPPER_OUTER] = 0.0
    return w


def _triangulate(points: np.ndarray, n_face: int) -> np.ndarray:
    """Triangles over the landmarks inside the face oval's hull, plus background triangles joining the oval to
    the anchors; both share the oval hull as their border, so no gaps open when the head turns. (Landmarks
    outside the oval move inwards on a turn and would leave notches, so they are left out.)"""
    oval = Delaunay(points[FACE_OVAL])
    inside = np.flatnonzero(oval.find_simplex(points[:n_face]) >= 0)
    face_ids = np.union1d(inside, FACE_OVAL)
    face = face_ids[Delaunay(points[face_ids]).simplices]
    back_ids = np.concatenate([FACE_OVAL, np.arange(n_face, len(points))])
    back = back_ids[Delaunay(points[back_ids]).simplices]
    back = back[(back >= n_face).any(1)]
    return np.concatenate([back, face])  # background first: drawn first, so the face wins where they overlap


class _Animator:
    """Warps one portrait to given (rotation, mouth opening) states."""

    def __init__(self, img: np.ndarray, lm: np.ndarray):
        self.img, self.lm, size = img, lm, img.shape[0]
        self.eyes = EyeRenderer(img, lm)
        self.face_w = np.linalg.norm(lm[CHEEK_L] - lm[CHEEK_R])
        # Pivot behind the nose tip (roughly the middle of the head), at the face's centre height.
        self.centre = np.array([lm[NOSE_TIP, 0], lm[:, 1].mean(), lm[NOSE_TIP, 2] - 0.8 * self.face_w])
        inner, fixed = _anchors(lm, size)
        # The ring moves like the face's outline (same depth), so hair follows rigidly and the stretch needed by
        # the rotation happens in the background band between the rings, not in a fold at the face's edge.
        self.inner = np.concatenate([inner, np.full((len(inner), 1), lm[FACE_OVAL, 2].mean())], 1)
        self.fixed = fixed
        self.n_face, self.n_moving = len(lm), len(lm) + len(inner)
        self.src = np.concatenate([lm[:, :2], inner, fixed])  # rest positions, face frame (x, y)
        self.tris = _triangulate(self.src, self.n_face)
        self.mouth_w = _mouth_weights(lm)
        self.grid = np.mgrid[0:size, 0:size][::-1].astype(np.float32)  # (2, H, W): u, v

    def warp(self, rotation: np.ndarray, mouth_open: float, gaze: np.ndarray) -> np.ndarray:
        """One frame: the eyes turned by gaze (4,) (NaN: shut), then the head rotated with the mouth open."""
        img = self.eyes.render(np.nan_to_num(gaze), closed=bool(np.isnan(gaze).any()))
        lm = self.lm.copy()
        lm[:, 1] -= mouth_open * 0.05 * self.face_w * self.mouth_w  # jaw drop, in the head's own frame
        moving = np.concatenate([lm, self.inner, self.lm[LOWER_INNER]])
        moved = (moving - self.centre) @ rotation.T + self.centre  # orthographic camera: drop z afterwards
        dst = np.concatenate([moved[: self.n_moving, :2], self.fixed])
        # Triangles touching an anchor are drawn first, so the face always covers the background where they fold.
        depth = np.concatenate([moved[: self.n_face, 2], np.full(len(dst) - self.n_face, -np.inf)])
        frame = self._piecewise_affine(img, dst, depth)
        gap = np.concatenate([moved[self.n_moving :, :2], dst[LOWER_INNER[::-1]]])  # lower lip: rest -> dropped
        return self._paint_mouth(frame, gap, mouth_open)

    def _piecewise_affine(self, img: np.ndarray, dst: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Inverse-map every output pixel through the triangle covering it; triangles are rasterised far to
        near so the nearest surface wins where the rotation folds the mesh (e.g. the nose over a cheek)."""
        tris = self.tris
        p, q = (dst * [1, -1])[tris], (self.src * [1, -1])[tris]  # (K, 3, 2) pixels: output, portrait
        # Affine map output -> portrait per triangle, in closed form (batched LAPACK calls spin BLAS threads).
        d1, d2, s1, s2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
        det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
        ok = np.abs(det) > 1e-6  # degenerate (zero-area) triangles cover nothing
        inv = np.stack([[d2[:, 1], -d2[:, 0]], [-d1[:, 1], d1[:, 0]]]) / np.where(ok, det, 1)  # (2, 2, K)
        lin = s1[:, :, None] * inv[0].T[:, None, :] + s2[:, :, None] * inv[1].T[:, None, :]  # (K, 2, 2)
        shift = q[:, 0] - np.einsum("kij,kj->ki", lin, p[:, 0])
        coef = np.concatenate([lin.reshape(-1, 4), shift], 1).astype(np.float32)  # (K, 6): a, b, c, d, e, f
        ids = np.full(img.shape[:2], -1, np.int32)
        order = np.argsort(depth[tris].mean(1), kind="stable")
        pts = np.round(p * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        for k in order[ok[order]]:
            cv2.fillConvexPoly(ids, pts[k], int(k), lineType=cv2.LINE_8, shift=4)
        # Only the region the moving triangles can reach changes; elsewhere the portrait is copied.
        reach = p[(tris < self.n_moving).any(1)].reshape(-1, 2)
        x0, y0 = np.maximum(np.floor(reach.min(0)) - 1, 0).astype(int)
        x1, y1 = np.ceil(reach.max(0) + 2).astype(int)
        roi = ids[y0:y1, x0:x1]
        c = coef[np.maximum(roi, 0)]
        u, v = self.grid[0, y0:y1, x0:x1], self.grid[1, y0:y1, x0:x1]
        map_u = np.where(roi >= 0, c[..., 0] * u + c[..., 1] * v + c[..., 4], u)
        map_v = np.where(roi >= 0, c[..., 2] * u + c[..., 3] * v + c[..., 5], v)
        frame = img.copy()
        frame[y0:y1, x0:x1] = cv2.remap(img, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return frame

    @staticmethod
    def _paint_mouth(frame: np.ndarray, gap: np.ndarray, mouth_open: float) -> np.ndarray:
        """Darken the gap the lower lip opened (between its rest and dropped positions); otherwise the warp
        just stretches lip skin across it. Teeth visible in the portrait stay above the gap."""
        if mouth_open < 0.05:
            return frame
        pix = gap * [1, -1]
        x0, y0 = np.floor(pix.min(0)).astype(int) - 4
        x1, y1 = np.ceil(pix.max(0)).astype(int) + 5
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((pix - [x0, y0]) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        alpha = cv2.GaussianBlur(mask, (5, 5), 0).astype(np.float32)[..., None] / 255 * min(1.0, 3 * mouth_open)
        patch = frame[y0:y1, x0:x1]
        frame[y0:y1, x0:x1] = (patch * (1 - alpha) + np.array([70, 25, 30], np.float32) * alpha).round()
        return frame


# ---------------------------------------------------------------- sequences and audio
def rotation_sequence(axes: list[tuple[float, float]], n_frames: int, fps: int) -> np.ndarray:
    """(T, 3) yaw, pitch, roll in degrees: one sine per axis, so every axis is zero at frame 0."""
    t = np.arange(n_frames) / fps
    return np.stack([amp * np.sin(2 * np.pi * t / period) for amp, period in axes], -1)


VOWEL_FORMANTS = [(800, 1200, 2500), (300, 2300, 3000), (320, 800, 2300), (500, 1900, 2500), (500, 900, 2400)]


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """Second-order formant resonator with unit gain at DC (Klatt)."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    a1, a2 = 2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), -r * r
    return lfilter([1 - a1 - a2], [1, -a1, -a2], x)


def synth_speech(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like audio: glottal pulses with gliding pitch through vowel formants, ~4 syllables/s with pauses.
    Returns (float32 samples in [-1, 1], amplitude envelope per sample in [0, 1])."""
    n = int(round(seconds * SAMPLE_RATE))
    audio, env = np.zeros(n), np.zeros(n)
    pos = int(0.25 * SAMPLE_RATE)  # start silent so frame 0 has a closed mouth (the rest pose)
    since_pause = 0
    while pos < n:
        dur = int(rng.uniform(0.14, 0.26) * SAMPLE_RATE)
        t = np.arange(dur) / SAMPLE_RATE
        f0 = rng.uniform(170, 230) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t) - 0.1 * t)
        phase = np.cumsum(f0) / SAMPLE_RATE
        src = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)  # one pulse per pitch period
        src = lfilter([1, -1], [1, -0.97], src) + 0.02 * rng.standard_normal(dur)  # pulse shape + breath
        for f, bw in zip(VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))], (80, 100, 150)):
            src = _resonator(src, f, bw)
        shape = np.sin(np.pi * np.arange(dur) / dur) ** 1.5
        end = min(n, pos + dur)
        audio[pos:end] += (src * shape)[: end - pos] / (np.abs(src).max() + 1e-9)
        env[pos:end] = np.maximum(env[pos:end], shape[: end - pos])
        since_pause += 1
        gap = rng.uniform(0.25, 0.45) if since_pause >= rng.integers(4, 8) else rng.uniform(0.02, 0.06)
        since_pause = 0 if gap > 0.2 else since_pause
        pos = end + int(gap * SAMPLE_RATE)
    audio = lfilter([1, -1], [1, -0.995], audio)  # remove the resonators' slow drift (high-pass at ~13 Hz)
    return (0.6 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32), env


def frame_envelope(env: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
    """Mean amplitude envelope over each video frame's span of samples."""
    edges = np.round(np.arange(n_frames + 1) * SAMPLE_RATE / fps).astype(int)
    return np.array([env[a:b].mean() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])


# ---------------------------------------------------------------- encoding
def _encode(frames, n_frames: int, size: int, fps: int, audio: np.ndarray, out: Path) -> None:
    """Pipe raw RGB frames to ffmpeg: H.264 (yuv420p, CRF 18) + AAC, constant frame rate, written to `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        wavfile.write(wav, SAMPLE_RATE, audio)
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(fps), "-i", "pipe:0",
               "-i", str(wav), "-map", "0:v", "-map", "1:a",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-r", str(fps),
               "-c:a", "aac", "-b:a", "64k", "-ac", "1", "-ar", str(SAMPLE_RATE), str(out)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for _, frame in zip(range(n_frames), frames):
                proc.stdin.write(frame.tobytes())
        finally:
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed: {err.strip()}")


def make_demo_clips(out_dir: Path, *, seconds: float = 4.0, fps: int = 25, size: int = 512, seed: int = 0
                    ) -> list[DemoClip]:
    """Write the demo clips (mp4 + ground-truth pose and gaze .npy) into `out_dir`; existing complete clips are kept.
    `seed` varies the synthetic speech (and so the mouth); the head and eye motion and the blinks are fixed per clip."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_frames = int(round(seconds * fps))
    clips = []
    for index, (name, portrait, axes) in enumerate(CLIPS):
        clip = DemoClip(name, out_dir / f"{name}.mp4", out_dir / f"{name}.pose.npy", out_dir / f"{name}.gaze.npy")
        clips.append(clip)
        if clip.video.exists() and clip.gaze.exists() and clip.pose.exists():  # renamed into place when complete
            continue
        angles = rotation_sequence(axes, n_frames, fps).astype(np.float32)
        eye_rng = np.random.default_rng([GAZE_SEED, index])
        gaze = gaze_sequence(n_frames, fps, eye_rng).astype(np.float32)
        gaze[blink_frames(n_frames, fps, eye_rng)] = np.nan
        audio, env = synth_speech(n_frames / fps, np.random.default_rng([seed, index]))
        mouth = frame_envelope(env, n_frames, fps)
        animator = _Animator(*_portrait(portrait, size))
        rotations = euler_to_rotation(angles.astype(np.float64))
        frames = (animator.warp(r, m, g) for r, m, g in zip(rotations, mouth, gaze))
        tmp = {k: clip.video.with_name(f".{name}.{os.getpid()}.tmp.{k}") for k in ("mp4", "gaze.npy", "pose.npy")}
        try:
            _encode(frames, n_frames, size, fps, audio, tmp["mp4"])
            np.save(tmp["gaze.npy"], gaze)
            np.save(tmp["pose.npy"], angles)
            os.replace(tmp["mp4"], clip.video)
            os.replace(tmp["gaze.npy"], clip.gaze)
            os.replace(tmp["pose.npy"], clip.pose)  # pose last: its presence marks the clip complete
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)
    return clips
