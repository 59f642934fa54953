"""The face tracker's geometry: detections linked into tracks, face-continuous spans, and the smoothed square crop
kept inside the frame (used by the facetrack stage, posetalk_data.stages.facetrack)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d


@dataclass
class Track:
    frames: list[int]
    boxes: list[np.ndarray]        # x0, y0, x1, y1 in source pixels
    scores: list[float]

    @property
    def weight(self) -> float:     # favours a large face that is present often
        return float(sum((b[2] - b[0]) * (b[3] - b[1]) for b in self.boxes))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


Detections = list[tuple[int, list[tuple[np.ndarray, float]]]]   # (frame index, [(box, score), ...])


def link_tracks(detections: Detections, max_gap: int, min_iou: float = 0.2) -> list[Track]:
    """Greedy IoU linking of per-frame detections into tracks; a track may skip up to `max_gap` frames."""
    tracks: list[Track] = []
    for f, dets in detections:
        live = [t for t in tracks if f - t.frames[-1] <= max_gap + 1]
        pairs = sorted(((iou(t.boxes[-1], box), i, j) for i, t in enumerate(live) for j, (box, _) in enumerate(dets)),
                       reverse=True)
        used_t, used_d = set(), set()
        for overlap, i, j in pairs:
            if overlap < min_iou or i in used_t or j in used_d:
                continue
            used_t.add(i), used_d.add(j)
            live[i].frames.append(f), live[i].boxes.append(dets[j][0]), live[i].scores.append(dets[j][1])
        for j, (box, score) in enumerate(dets):
            if j not in used_d:
                tracks.append(Track([f], [box], [score]))
    return tracks


def spans(frames: list[int], max_gap: int, min_len: int) -> list[tuple[int, int]]:
    """Half-open frame spans [a, b) covering `frames` where no gap exceeds `max_gap`; spans shorter than min_len dropped."""
    out, start = [], frames[0]
    for prev, cur in zip(frames, frames[1:]):
        if cur - prev > max_gap + 1:
            out.append((start, prev + 1))
            start = cur
    out.append((start, frames[-1] + 1))
    return [(a, b) for a, b in out if b - a >= min_len]


def gaps(covered: list[tuple[int, int]], a: int, b: int) -> list[tuple[int, int]]:
    """The parts of [a, b) that no span of `covered` (sorted, not overlapping) covers."""
    out, at = [], a
    for s, e in covered:
        if s > at:
            out.append((at, min(s, b)))
        at = max(at, e)
    if at < b:
        out.append((at, b))
    return [(s, e) for s, e in out if e > s]


def face_spans(frames: list[int], a: int, b: int, every: int, max_gap: int
               ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """A track's face-continuous spans within the shot [a, b) (frames: where it was detected, every `every`-th
    frame checked), and the frames of the shot they leave out. A span reaches to the frame before the next
    unchecked detection, and back to the shot's start when no check lay between them: frames that detection
    skipped are not frames without a face."""
    inside = [f for f in frames if a <= f < b]
    runs = [(a if s - a < every else s, min(b, e + every - 1)) for s, e in spans(inside, max_gap, 0)] if inside else []
    return runs, gaps(runs, a, b)


def crop_track(track: Track, a: int, b: int, scale: float, sigma: float) -> np.ndarray:
    """(b-a, 3) smoothed crop centre x, y and side in source pixels over frames [a, b), gaps interpolated."""
    idx = np.arange(a, b)
    boxes = np.array(track.boxes, dtype=np.float64)
    frames = np.array(track.frames)
    cx = np.interp(idx, frames, (boxes[:, 0] + boxes[:, 2]) / 2)
    cy = np.interp(idx, frames, (boxes[:, 1] + boxes[:, 3]) / 2)
    side = np.interp(idx, frames, np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])) * scale
    crop = np.stack([cx, cy, side], 1)
    # Offline, so a centred Gaussian smooths without lag.
    return gaussian_filter1d(crop, sigma, axis=0, mode="nearest") if sigma > 0 else crop


def fit_crop(crop: np.ndarray, width: int, height: int, crop_scale: float, min_scale: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops kept inside the frame (no black bars). (T, 3) cx, cy, side -> (crops, padded fraction of each crop's
    pixels, effective crop scale = side / face side).

    A box that reaches past the frame is shifted back inside when the frame has room; where the frame is smaller
    than the wanted crop, the crop shrinks to the largest square inside the frame, but never below `min_scale` face
    sides (the face stays whole). Only then is it centred on the short axis and padded."""
    out = np.array(crop, dtype=np.float64)
    face = out[:, 2] / crop_scale
    out[:, 2] = np.maximum(np.minimum(out[:, 2], min(width, height)), face * min_scale)
    for axis, extent in ((0, width), (1, height)):
        half = out[:, 2] / 2
        inside = np.clip(out[:, axis], half, np.maximum(extent - half, half))
        out[:, axis] = np.where(out[:, 2] <= extent, inside, extent / 2)
    covered = np.minimum(out[:, 2], width) * np.minimum(out[:, 2], height)
    return out, 1.0 - covered / out[:, 2] ** 2, out[:, 2] / face


def cut_square(frame: np.ndarray, cx: float, cy: float, side: float, size: int) -> tuple[np.ndarray, float]:
    """Square crop (black outside the frame) resized to size x size; also the fraction that fell outside."""
    h, w = frame.shape[:2]
    s = max(int(round(side)), 2)
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    px0, py0, px1, py1 = max(0, -x0), max(0, -y0), max(0, x0 + s - w), max(0, y0 + s - h)
    patch = frame[max(0, y0):min(h, y0 + s), max(0, x0):min(w, x0 + s)]
    if px0 or py0 or px1 or py1:
        patch = cv2.copyMakeBorder(patch, py0, py1, px0, px1, cv2.BORDER_CONSTANT, value=0)
    outside = 1.0 - (patch.shape[0] - py0 - py1) * (patch.shape[1] - px0 - px1) / float(s * s)
    while patch.shape[0] >= 2 * size:   # halve first: INTER_AREA at odd ratios costs ~10x more than this
        patch = cv2.pyrDown(patch)
    interp = cv2.INTER_LINEAR if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp), outside


def hint_box(hint: dict | None, width: int, height: int) -> np.ndarray | None:
    """A dataset's crop hint ({box, units, frame}) as x0, y0, x1, y1 in pixels of the frame as displayed."""
    if not hint or not hint.get("box"):
        return None
    box = np.asarray(hint["box"], dtype=np.float64)
    if hint.get("units") == "normalised":
        return box * [width, height, width, height]
    frame_w, frame_h = hint.get("frame") or (None, None)
    sy = height / frame_h if frame_h else 1.0
    sx = width / frame_w if frame_w else sy      # HDTF declares only the height it was downloaded at
    return box * [sx, sy, sx, sy]


def pick_track(tracks: list[Track], hint: np.ndarray | None) -> Track:
    """The track a dataset's crop hint points at (most overlap with its median box), else the dominant one."""
    if hint is not None:
        overlap = [(iou(np.median(np.array(t.boxes), 0), hint), t.weight, i) for i, t in enumerate(tracks)]
        best = max(overlap)
        if best[0] > 0:
            return tracks[best[2]]
    return max(tracks, key=lambda t: t.weight)


def detect_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    k = min(1.0, max_side / max(width, height))
    return max(2, int(width * k) // 2 * 2), max(2, int(height * k) // 2 * 2)
