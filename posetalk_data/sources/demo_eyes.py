"""Demo source, eyes: turn each eye of a portrait by a KNOWN rotation, and close both eyes for known blinks.

Each iris is cut out of the portrait, the gap it leaves is filled from the white of the eye on either side, and the
iris is pasted back shifted by where the rotated eye would put it; the eyelids (the eye-opening outline of the
MediaPipe mesh) hide whatever falls outside the opening, as they would. A blink paints the opening over with the
surrounding skin and draws a lash line. The edited portrait is then animated by the head rotation as before, so the
eyes move with the head and within it.

The shift for a rotation uses human averages, not the extractor's constants: an iris 11.7 mm across whose centre is
10.0 mm in front of the eye's centre of rotation, scaled by the portrait's own iris size (MediaPipe's iris contour).
"""
from __future__ import annotations

import cv2
import numpy as np

from posetalk_data.gaze import direction
from posetalk_data.geometry import IRIS, fit_head_pose, load_face_template

IRIS_DIAMETER_MM, IRIS_TO_CENTRE_MM = 11.7, 10.0
# the eye-opening outline of each eye (image-left eye first), in order around it, from MediaPipe's eye contours
EYE_OPENING = ((33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
               (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249))


def gaze_sequence(n_frames: int, fps: int, rng: np.random.Generator, yaw_max: float = 20.0,
                  pitch_max: float = 8.0) -> np.ndarray:
    """(T, 4) yaw, pitch (deg) of the image-left eye, then the image-right eye, relative to the head: fixations of
    0.3-0.8 s joined by 3-frame saccades (cosine ramps), both eyes together (people's eyes turn together); the
    first fixation is straight ahead, so frame 0 is the rest portrait."""
    targets, times = [np.zeros(2)], [0.0]
    while times[-1] < n_frames / fps:
        times.append(times[-1] + rng.uniform(0.3, 0.8))
        targets.append(rng.uniform([-yaw_max, -pitch_max], [yaw_max, pitch_max]))
    out, ramp = np.zeros((n_frames, 2)), 3
    for k in range(1, len(times)):
        start = int(round(times[k] * fps))
        if start >= n_frames:
            break
        s = 0.5 - 0.5 * np.cos(np.pi * np.clip((np.arange(n_frames) - start + 1) / ramp, 0, 1))
        out += s[:, None] * (targets[k] - targets[k - 1])
    return np.concatenate([out, out], 1)


def blink_frames(n_frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) bool, True where both eyes are shut: blinks of 3-4 frames every 1.2-2.2 s, none in the first second."""
    closed, t = np.zeros(n_frames, bool), rng.uniform(1.0, 1.6)
    while int(t * fps) < n_frames:
        start = int(t * fps)
        closed[start:start + int(rng.integers(3, 5))] = True
        t += rng.uniform(1.2, 2.2)
    return closed


def _bilinear(img: np.ndarray, x: np.ndarray, y: float) -> np.ndarray:
    return cv2.getRectSubPix(img, (1, 1), (float(x), float(y)))[0, 0].astype(np.float32)


class EyeRenderer:
    """Edits one portrait (RGB, its landmarks in the face frame) to given eye rotations or closed eyes."""

    def __init__(self, img: np.ndarray, lm: np.ndarray):
        self.img = img
        self.rest = fit_head_pose(lm, load_face_template()).rotation[0]  # the portrait's own head pose
        px = lm[:, :2] * [1, -1]  # face frame -> pixels
        self.eyes = []
        for e, iris in enumerate(IRIS):
            centre = px[iris[0]]
            radius = float(np.linalg.norm(px[list(iris[1:])] - centre, axis=1).mean())
            pad = int(np.ceil(2.5 * radius)) + 4
            box = (int(centre[0]) - 3 * pad, int(centre[1]) - pad, 6 * pad, 2 * pad)  # x, y, w, h
            x0, y0, w, h = box
            outline = (px[list(EYE_OPENING[e])] - [x0, y0]) * 16
            opening = np.zeros((h, w), np.uint8)
            cv2.fillPoly(opening, [np.round(outline).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
            patch = img[y0:y0 + h, x0:x0 + w].astype(np.float32)
            local = centre - [x0, y0]
            self.eyes.append(dict(box=box, centre=local, radius=radius, outline=outline,
                                  opening=opening.astype(np.float32)[..., None] / 255, patch=patch,
                                  white=self._without_iris(patch, local, radius),
                                  iris=self._iris_sprite(patch, opening, local, radius),
                                  shut=self._shut(patch, opening, outline)))

    def eye_shift(self, yaw: float, pitch: float, radius: float) -> np.ndarray:
        """Pixel shift (right, down) of the iris centre for an eye rotation relative to the head."""
        r = radius * 2 * IRIS_TO_CENTRE_MM / IRIS_DIAMETER_MM  # rotation radius in pixels
        gaze = direction(np.array([yaw, pitch]))  # gaze.npy's angles; yaw > 0: right, pitch > 0: up
        d = self.rest @ (r * (gaze - [0.0, 0.0, 1.0]))
        return np.array([d[0], -d[1]])

    def render(self, gaze: np.ndarray, closed: bool) -> np.ndarray:
        """The portrait with each eye turned by gaze (4,) = yaw, pitch of the image-left then image-right eye,
        or with both eyes shut."""
        out = self.img.copy()
        for e, eye in enumerate(self.eyes):
            x0, y0, w, h = eye["box"]
            m = eye["opening"]
            if closed:
                new, m = eye["shut"], 1.0  # the lid moved above the opening too
            else:
                shift = np.float32([[1, 0, 0], [0, 1, 0]])
                shift[:, 2] = self.eye_shift(gaze[2 * e], gaze[2 * e + 1], eye["radius"])
                sprite, alpha = (cv2.warpAffine(a, shift, (w, h), flags=cv2.INTER_LINEAR) for a in eye["iris"])
                new = eye["white"] * (1 - alpha[..., None]) + sprite * alpha[..., None]
            out[y0:y0 + h, x0:x0 + w] = np.clip(eye["patch"] * (1 - m) + new * m, 0, 255).round().astype(np.uint8)
        return out

    @staticmethod
    def _without_iris(patch: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
        """The patch with the iris disk replaced, row by row, by a blend of the white just left and right of it."""
        out, rr = patch.copy(), 1.2 * radius + 1
        for y in range(int(np.ceil(centre[1] - rr)), int(np.floor(centre[1] + rr)) + 1):
            half = np.sqrt(max(rr**2 - (y - centre[1]) ** 2, 0.0))
            xl, xr = centre[0] - half - 1, centre[0] + half + 1
            xs = np.arange(int(np.ceil(xl)), int(np.floor(xr)) + 1)
            t = ((xs - xl) / (xr - xl))[:, None]
            out[y, xs] = (1 - t) * _bilinear(patch, xl, y) + t * _bilinear(patch, xr, y)
        return out

    @staticmethod
    def _iris_sprite(patch: np.ndarray, opening: np.ndarray, centre: np.ndarray, radius: float):
        """(colours, alpha) of the iris disk; where the lids hid it, its median visible colour."""
        yy, xx = np.mgrid[: patch.shape[0], : patch.shape[1]]
        dist = np.hypot(xx - centre[0], yy - centre[1])
        alpha = np.clip(1.05 * radius + 0.5 - dist, 0, 1).astype(np.float32)  # anti-aliased edge
        seen = (dist < radius) & (opening > 200)
        fill = np.median(patch[seen], 0) if seen.any() else patch[dist < radius].mean(0)
        colours = np.where((opening > 128)[..., None], patch, fill).astype(np.float32)
        return colours, alpha

    @staticmethod
    def _shut(patch: np.ndarray, opening: np.ndarray, outline: np.ndarray) -> np.ndarray:
        """The eye shut: the upper lid slides down to the lower one. Each column between the top of the patch and
        the lower lid shows, stretched, what lay between the top and the upper lid (lashes end on the lower lid)."""
        pts = outline / 16
        upper, lower = pts[:9], np.concatenate([pts[8:], pts[:1]])  # corner, lid, corner
        xs = np.arange(patch.shape[1], dtype=np.float32)
        lo_x, hi_x = pts[:, 0].min(), pts[:, 0].max()
        y_up = np.interp(xs, *upper[np.argsort(upper[:, 0])].T)
        y_low = np.interp(xs, *lower[np.argsort(lower[:, 0])].T)
        inside = (xs > lo_x) & (xs < hi_x)
        gap = np.where(inside, np.maximum(y_low - y_up, 0), 0)
        gap = np.convolve(gap, np.hanning(9)[1:-1] / np.hanning(9).sum(), "same")[None]  # no seams at the corners
        y_low = y_up + gap[0]
        ys = np.arange(patch.shape[0], dtype=np.float32)[:, None]
        frac = np.clip(ys / np.maximum(y_low[None], 1e-3), 0, 1)
        map_y = np.where(ys <= y_low[None], ys - frac * gap, ys).astype(np.float32)
        map_x = np.broadcast_to(xs[None], map_y.shape).astype(np.float32)
        return cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
