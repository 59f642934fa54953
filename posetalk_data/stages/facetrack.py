"""Stage 3, face tracking, crop and face mesh (1 video -> N face clips).

Pass 1 decodes the video once and detects faces (MediaPipe face detection, offline) on downscaled frames,
linking them into tracks; it keeps the decoded frames when they fit in `frame_cache_mb` (so the crop pass decodes
nothing; a longer video is decoded again and memory stays bounded).
The dominant track (largest face, most often) is kept; dropouts up to `max_gap_s` are interpolated and each
face-continuous span of at least `min_clip_s` becomes a clip. Pass 2 cuts a temporally smoothed square crop
around that track from the full-resolution frames, runs the face mesh on each crop (`landmarks.MeshTracker`: the
crop is at hand, so no frame is decoded again for it) and encodes it as the clip's `video.mp4` (x264 `preset`, a
keyframe every `keyframe_s`, so the trainers can seek cheaply). Crops stay inside the
frame (`fit_crop`): shifted when the frame has room, shrunk to the largest square that fits when it has not, padded
only when even that would cut the face; a clip padded beyond `max_padded_fraction` is dropped with that reason.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..config import FaceTrackConfig
from ..media import VideoWriter
from ..schema import VIDEO_FPS, ClipRecord
from .base import ClipFailure, Resources, Stage
from .landmarks import MeshTracker
from .normalise import video_frames


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


def promised_frames(record: ClipRecord) -> int:
    """Frames at 25 fps the header says the span holds (the video stream's duration, else the container's)."""
    end = min(record.end, record.probe.get("video_duration") or record.end)
    return max(int(round((end - record.start) * VIDEO_FPS)), 1)


def detect_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    k = min(1.0, max_side / max(width, height))
    return max(2, int(width * k) // 2 * 2), max(2, int(height * k) // 2 * 2)


class FaceTrackStage(Stage):
    name = "facetrack"
    resources = Resources(cpus=1)   # decode, detector and face mesh, single-threaded per worker

    def __init__(self, cfg: FaceTrackConfig):
        self.cfg = cfg
        self._detector = self._mesh = None

    def inputs(self) -> list[str]:
        return ["probe", "span"]

    def outputs(self) -> list[str]:
        return ["video", "crop_box", "span", "mesh_raw"]

    def setup(self) -> None:
        import mediapipe as mp

        # A build runs one worker per core: OpenCV's own threads would only contend (13.5 -> 12.1 ms CPU a frame)
        cv2.setNumThreads(1)
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1 if self.cfg.detector == "full_range" else 0,
            min_detection_confidence=self.cfg.min_confidence)
        self._mesh = MeshTracker()

    def versions(self) -> dict[str, str]:
        import mediapipe as mp

        return {"face_detector": f"mediapipe {mp.__version__} face_detection {self.cfg.detector}"}

    def detect(self, record: ClipRecord) -> tuple[int, Detections, list[np.ndarray] | None]:
        """(frame count, detections on every `detect_every`-th frame, the decoded frames when they fit in
        `frame_cache_mb`, else None: the crop pass then decodes the video a second time)."""
        w, h = record.probe["width"], record.probe["height"]
        size = detect_size(w, h, self.cfg.detect_max_side)
        room = self.cfg.frame_cache_mb * 2 ** 20 // (w * h * 3)     # frames the cache holds
        # a video whose header promises more frames is decoded twice from the start; one that lies is caught below
        cache: list[np.ndarray] | None = [] if 0 < promised_frames(record) <= room else None
        out, n = [], 0
        for n, frame in enumerate(video_frames(record), 1):
            if cache is not None and len(cache) < room:
                cache.append(frame)
            elif cache is not None:
                cache = None                           # too long for the cache: bounded memory wins
            if (n - 1) % self.cfg.detect_every:
                continue
            small = frame if size == (w, h) else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            found = self._detector.process(small).detections or []
            dets = []
            for d in found:
                r = d.location_data.relative_bounding_box
                dets.append((np.array([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h]),
                             float(d.score[0])))
            out.append((n - 1, dets))
        return n, out, cache

    def process(self, record: ClipRecord) -> list[ClipRecord]:
        if self._detector is None:
            self.setup()
        cfg, fps = self.cfg, VIDEO_FPS
        n, detections, frames = self.detect(record)
        promised = promised_frames(record)
        truncated = n < 0.95 * promised - 3
        if truncated:
            record.flags.append("truncated")
            record.meta["decoded_fraction"] = n / promised
        if n == 0 or (truncated and n < cfg.min_clip_s * fps):
            raise ClipFailure(f"the video is truncated or damaged: {n} of the {promised} frames its header "
                              "promises could be decoded" if truncated else "no frames could be decoded")
        max_gap = max(int(round(cfg.max_gap_s * fps)), cfg.detect_every - 1)
        tracks = link_tracks(detections, max_gap)
        if not tracks:
            raise ClipFailure("no face found in any frame")
        main = pick_track(tracks, hint_box(record.spec.extra.get("crop_hint"), record.probe["width"],
                                           record.probe["height"]))
        other = {f for t in tracks if t is not main for f in t.frames}
        multi = len(other & set(main.frames)) / len(main.frames)   # over the frames where detection ran
        if multi > cfg.multi_face_min_fraction and cfg.multi_face == "drop":
            raise ClipFailure(f"several faces: a second face in {multi:.0%} of the frames (policy: drop)")
        # a span reaches to the frame before the next unchecked detection, not just its last detected frame
        found = [(a, min(n, b + cfg.detect_every - 1))
                 for a, b in spans(main.frames, max_gap, int(round(cfg.min_clip_s * fps)))]
        if not found:
            raise ClipFailure(f"no face-continuous span of at least {cfg.min_clip_s:g} s "
                              f"(face found in {len(main.frames) / len(detections):.0%} of the checked frames)")
        clips = [self._new_clip(record, a, b, main, multi) for a, b in found]
        for clip in clips:
            if clip.meta["crop_padded_fraction"] > cfg.max_padded_fraction:
                clip.errors[self.name] = (f"the frame is too small for the face crop: "
                                          f"{clip.meta['crop_padded_fraction']:.0%} of the crop would be padding "
                                          f"(facetrack.max_padded_fraction {cfg.max_padded_fraction:g})")
        live = [(c, span) for c, span in zip(clips, found) if c.ok]
        if live:
            self._write_crops(record, *map(list, zip(*live)), frames)
        return clips

    def _new_clip(self, record: ClipRecord, a: int, b: int, track: Track, multi: float) -> ClipRecord:
        cfg = self.cfg
        clip = copy.deepcopy(record)
        clip.start, clip.end = record.start + a / VIDEO_FPS, record.start + b / VIDEO_FPS
        clip.workdir = record.workdir / f"clip_{a:07d}"
        clip.workdir.mkdir(parents=True, exist_ok=True)
        clip.video = clip.workdir / "video.mp4"
        boxes, padded, scale = fit_crop(crop_track(track, a, b, cfg.crop_scale, cfg.crop_smooth_s * VIDEO_FPS),
                                        record.probe["width"], record.probe["height"], cfg.crop_scale,
                                        cfg.min_crop_scale)
        clip.arrays["crop_box"] = boxes
        clip.meta.update(crop_padded_fraction=float(padded.mean()), crop_scale_effective=float(np.median(scale)))
        if padded.mean() > 0.01:
            clip.flags.append("crop_padded")
        present = [f for f in track.frames if a <= f < b]
        scores = [s for f, s in zip(track.frames, track.scores) if a <= f < b]
        k = self.cfg.detect_every
        checked = len(range(-(-a // k) * k, b, k))   # frames in [a, b) where detection ran
        clip.meta.update(audio_offset=a / VIDEO_FPS, face_present_fraction=min(1.0, len(present) / max(checked, 1)),
                         detection_score=float(np.mean(scores)), multi_face_fraction=multi)
        if multi > self.cfg.multi_face_min_fraction:
            clip.flags.append("multi_face")
        return clip

    def _write_crops(self, record: ClipRecord, clips: list[ClipRecord], found: list[tuple[int, int]],
                     frames: list[np.ndarray] | None) -> None:
        """The crop pass over the cached frames, or a second decode: each span's crops are meshed and encoded as
        they are cut (spans never overlap)."""
        cfg, size = self.cfg, self.cfg.crop_size
        writers = [VideoWriter(c.video, width=size, height=size, fps=VIDEO_FPS, crf=cfg.crf, preset=cfg.preset,
                               keyframe_every=max(1, round(cfg.keyframe_s * VIDEO_FPS))) for c in clips]
        meshes: list[list[np.ndarray]] = [[] for _ in clips]
        try:
            for f, frame in enumerate(video_frames(record) if frames is None else frames):
                for i, (a, b) in enumerate(found):
                    if a <= f < b:
                        if f == a:
                            self._mesh.reset()       # a new clip: never carry the last one's face over
                        cx, cy, side = clips[i].arrays["crop_box"][f - a]
                        crop = cut_square(frame, cx, cy, side, size)[0]
                        meshes[i].append(self._mesh(crop))
                        writers[i].write(crop)
        finally:
            for w in writers:
                w.close()
        for clip, (a, b), w, mesh in zip(clips, found, writers, meshes):
            if w.frames != b - a:   # a second decode must see the same frames as the first
                raise ClipFailure(f"decoded {w.frames} frames for span {a}-{b} on the second pass")
            clip.arrays["mesh_raw"] = np.asarray(mesh, np.float32)
