"""Stage 3, face tracking, crop and face mesh (1 video -> N face clips).

Pass 1 decodes the video once, finds its hard scene cuts (posetalk_data.cuts) and detects faces (MediaPipe face
detection, offline; a checked frame where the chosen model finds none is tried with the other one) on downscaled
frames; it keeps the decoded frames when they fit in `frame_cache_mb` (so the crop pass decodes nothing), or, for a
longer video, the frames reduced to the size its crops need when those fit (a 1080p frame is 6 MB, and a 512 px crop
rarely needs all of it); else the video is decoded again and memory stays bounded. In each shot between the cuts,
faces are linked into tracks and the dominant track (largest face, most often) is kept; dropouts up to `max_gap_s`
are interpolated and each face-continuous span of at least `min_clip_s` becomes a clip. Every other frame of the
video (a cut's trim, no face, a span too short, several faces under `multi_face: drop`, an undecodable tail) comes
back as a record of kind "span" with the reason: a row of failures.parquet, so the time a build keeps and drops adds
up to the source's. Pass 2 cuts a temporally smoothed square crop around that track from the full-resolution (or
reduced) frames, runs the face mesh on each crop (`landmarks.MeshTracker`: the crop is at hand, so no frame is
decoded again for it) and encodes it as the clip's `video.mp4` (x264 `preset`, a keyframe every `keyframe_s`, so the
trainers can seek cheaply). Crops stay inside the frame (`fit_crop`): shifted when the frame has room, shrunk to the
largest square that fits when it has not, padded only when even that would cut the face; a clip padded beyond
`max_padded_fraction` is dropped with that reason.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
from importlib.metadata import version

import cv2
import numpy as np

from ..config import CutsConfig, FaceTrackConfig, PipelineConfig
from ..cuts import CutDetector, shots
from ..media import MediaError, VideoWriter
from ..schema import VIDEO_FPS, ClipRecord
from ..tracking import (Detections, Track, crop_track, cut_square, detect_size, face_spans, fit_crop, hint_box,
                        link_tracks, pick_track)
from .base import ClipFailure, Resources, Stage
from .landmarks import MeshTracker
from .normalise import video_frames


def promised_frames(record: ClipRecord) -> int:
    """Frames at 25 fps the header says the span holds (the video stream's duration, else the container's)."""
    end = min(record.end, record.probe.get("video_duration") or record.end)
    return max(int(round((end - record.start) * VIDEO_FPS)), 1)


def dropped_span(record: ClipRecord, a: int, b: int, reason: str) -> ClipRecord:
    """Frames [a, b) of the video that no clip holds, as a failure record of kind "span": a row of
    failures.parquet with the span and the reason, so every second of a source is in a clip or accounted for."""
    return dataclasses.replace(record, start=record.start + a / VIDEO_FPS, end=record.start + b / VIDEO_FPS,
                               arrays={}, meta={"unit": "span"}, flags=[], members={},
                               errors={FaceTrackStage.name: reason})


def tail(decoded: int, promised: int, end: float) -> list[tuple[int, int, str]]:
    """The end of the span that has no frames (end: the span's length in frames): what the header promised but the
    decoder did not give (a truncated file), then the audio that runs past the video stream. Up to two frames are
    rounding (25 fps from 30, a container a few audio packets longer), not a loss."""
    out = []
    if promised - decoded > 2:
        out.append((decoded, promised, f"not decodable ({decoded} of the {promised} frames its header promises)"))
    if end - max(decoded, promised) > 2:
        out.append((max(decoded, promised), round(end), "no video (the audio runs past the video stream)"))
    return out


def held_scale(frame: np.ndarray, record: ClipRecord) -> np.ndarray:
    """x, y, side factors from source pixels to those of a cached `frame` (the source, or the source reduced)."""
    kx, ky = frame.shape[1] / record.probe["width"], frame.shape[0] / record.probe["height"]
    return np.array([kx, ky, min(kx, ky)])


def held_too_small(frame: np.ndarray, record: ClipRecord, boxes: np.ndarray, size: int) -> bool:
    """Whether a crop of `boxes` (cx, cy, side in source pixels) cut from the cached `frame`, which may be the
    source reduced, would have fewer than `size` pixels across where the source has them."""
    k = held_scale(frame, record)[2]
    return k < 1 and float(np.min(boxes[:, 2])) * k < size


class FaceTrackStage(Stage):
    name = "facetrack"
    resources = Resources(cpus=1)   # decode, detector and face mesh, single-threaded per worker

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.facetrack, cfg.cuts)

    def __init__(self, cfg: FaceTrackConfig, cuts: CutsConfig = CutsConfig()):
        self.cfg, self.cuts_cfg = cfg, cuts
        self._detectors, self._mesh = [], None

    def inputs(self) -> list[str]:
        return ["probe", "span"]

    def outputs(self) -> list[str]:
        return ["video", "crop_box", "span", "mesh_raw"]

    def check(self) -> None:
        """Fail before any work when the cut detector's library is missing (a wheel install without `make setup`:
        scenedetect is installed --no-deps, so pip does not pull it in)."""
        if self.cuts_cfg.detector != "none" and importlib.util.find_spec("scenedetect") is None:
            raise RuntimeError("PySceneDetect (scene cuts) is not installed: run `pip install --no-deps "
                               "scenedetect==0.7.2 platformdirs` (make setup does), or set cuts.detector=none")

    def setup(self) -> None:
        import mediapipe as mp

        # A build runs one worker per core: OpenCV's own threads would only contend (13.5 -> 12.1 ms CPU a frame)
        cv2.setNumThreads(1)
        first = 1 if self.cfg.detector == "full_range" else 0
        models = (first, 1 - first) if self.cfg.retry_other_detector else (first,)
        self._detectors = [mp.solutions.face_detection.FaceDetection(
            model_selection=m, min_detection_confidence=self.cfg.min_confidence) for m in models]
        self._mesh = MeshTracker()

    def versions(self) -> dict[str, str]:
        # from the installed packages' metadata: importing mediapipe (matplotlib with it) cost the driver 0.7 CPU s
        retry = " (else the other model)" if self.cfg.retry_other_detector else ""
        return {"face_detector": f"mediapipe {version('mediapipe')} face_detection {self.cfg.detector}{retry}",
                "scene_cuts": f"scenedetect {version('scenedetect')} {self.cuts_cfg.detector}"}

    def detect(self, record: ClipRecord, promised: int
               ) -> tuple[int, Detections, list[np.ndarray] | None, list[int]]:
        """(frame count, detections on every `detect_every`-th frame, the decoded frames when they fit in
        `frame_cache_mb`, else None: the crop pass then decodes the video a second time, the scene cuts found in
        the same decode). `promised`: the frames the header promises."""
        w, h = record.probe["width"], record.probe["height"]
        size = detect_size(w, h, self.cfg.detect_max_side)
        budget = self.cfg.frame_cache_mb * 2 ** 20
        held = (w, h)          # the size of the frames the cache holds
        if 0 < budget < promised * w * h * 3 and w * h > size[0] * size[1]:
            held = self._reduced_size(record, size) or held
        room = budget // (held[0] * held[1] * 3)     # frames the cache holds
        # a video whose header promises more frames is decoded twice from the start; one that lies is caught below
        cache: list[np.ndarray] | None = [] if 0 < promised <= room else None
        # decoded twice, this pass needs only the detector's small copy: the decoder scales it in the same process
        # (a 1080p frame is 6 MB through the pipe, its copy 0.7 MB), and the crop pass reads the full frames
        decoded = size if cache is None else None if held == (w, h) else held
        try:
            n, out, cache, cuts = self._detect_pass(record, decoded, size, w, h, cache, room, with_audio=True)
        except MediaError:
            if record.audio_plan is None:
                raise
            # perhaps the audio failed, not the video: decoded once more without it, the audio is then written
            # (or its failure told) where it is read
            n, out, cache, cuts = self._detect_pass(record, decoded, size, w, h,
                                                    None if cache is None else [], room, with_audio=False)
        return n, out, cache, cuts

    def _detect_pass(self, record: ClipRecord, decoded, size, w: int, h: int, cache, room: int, *,
                     with_audio: bool) -> tuple[int, Detections, list[np.ndarray] | None, list[int]]:
        """One decode: the detections every `detect_every`-th frame, the frame cache and the scene cuts (and the
        planned audio, with_audio)."""
        cuts = CutDetector(self.cuts_cfg)
        out, n = [], 0
        for n, frame in enumerate(video_frames(record, size=decoded, with_audio=with_audio), 1):
            if cache is not None and len(cache) < room:
                cache.append(frame)
            elif cache is not None:
                cache = None                           # too long for the cache: bounded memory wins
            cuts(n - 1, frame)
            if (n - 1) % self.cfg.detect_every:
                continue
            small = frame if frame.shape[1::-1] == size else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            dets = []
            for d in self._faces(small):
                r = d.location_data.relative_bounding_box
                dets.append((np.array([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h]),
                             float(d.score[0])))
            out.append((n - 1, dets))
        return n, out, cache, cuts.cuts

    def _reduced_size(self, record: ClipRecord, size: tuple[int, int]) -> tuple[int, int] | None:
        """For a video too long for the frame cache at full size: the size at which the crops would still get all
        the pixels they need (crop_size across the smallest crop the first frame's faces suggest, with room for a
        face a fifth smaller), or None where that is the full size or the first frame shows no face. The crop pass
        checks the crops it really cuts and decodes the video again where one needs more."""
        w, h = record.probe["width"], record.probe["height"]
        first = video_frames(record, size=size)
        frame = next(first, None)
        first.close()                 # stops that decoder
        if frame is None:
            return None
        sides = [max(d.location_data.relative_bounding_box.width * w, d.location_data.relative_bounding_box.height * h)
                 for d in self._faces(frame)]
        if not sides:
            return None
        crop = min(min(w, h), self.cfg.crop_scale * min(sides)) * 0.8
        held = detect_size(w, h, math.ceil(max(w, h) * self.cfg.crop_size / crop))
        return held if held[0] < w else None

    def _faces(self, small: np.ndarray) -> list:
        """The first model's detections, else the other model's (a face too large for the full-range model, or
        too small for the short-range one, is not a frame without a face)."""
        for detector in self._detectors:
            found = detector.process(small).detections
            if found:
                return found
        return []

    def process(self, record: ClipRecord) -> list[ClipRecord]:
        if not self._detectors:
            self.setup()
        cfg, fps = self.cfg, VIDEO_FPS
        promised = promised_frames(record)
        n, detections, frames, cuts = self.detect(record, promised)
        truncated = n < 0.95 * promised - 3
        if truncated:
            record.flags.append("truncated")
            record.meta["decoded_fraction"] = n / promised
        if n == 0 or (truncated and n < cfg.min_clip_s * fps):
            raise ClipFailure(f"the video is truncated or damaged: {n} of the {promised} frames its header "
                              "promises could be decoded" if truncated else "no frames could be decoded")
        pieces, trims = shots(n, cuts, int(round(self.cuts_cfg.trim_s * fps)))
        found: list[tuple[int, int, Track, float]] = []
        trim_s = self.cuts_cfg.trim_s
        dropped = [(a, b, f"scene cut ({len(at)} cut{'s' if len(at) > 1 else ''} at "
                          f"{', '.join(f'{c / fps:.2f}' for c in at)} s; {trim_s:g} s left out each side)")
                   for a, b, at in trims]
        for a, b in pieces:
            kept, lost = self._shot(record, detections, a, b, whole=len(pieces) == 1 and not trims)
            found += kept
            dropped += lost
        if not found:   # one row for the video: the reason that lost the most time
            raise ClipFailure(max(dropped, key=lambda d: d[1] - d[0])[2])
        found.sort(key=lambda f: f[0])
        clips = [self._new_clip(record, a, b, track, multi) for a, b, track, multi in found]
        for clip in clips:
            if clip.meta["crop_padded_fraction"] > cfg.max_padded_fraction:
                clip.errors[self.name] = (f"the frame is too small for the face crop: "
                                          f"{clip.meta['crop_padded_fraction']:.0%} of the crop would be padding "
                                          f"(facetrack.max_padded_fraction {cfg.max_padded_fraction:g})")
        live = [(c, (a, b)) for c, (a, b, _, _) in zip(clips, found) if c.ok]
        if live:
            self._write_crops(record, *map(list, zip(*live)), frames)
        dropped += tail(n, promised, (record.end - record.start) * fps)
        return clips + [dropped_span(record, a, b, reason) for a, b, reason in sorted(dropped)]

    def _shot(self, record: ClipRecord, detections: Detections, a: int, b: int, whole: bool
              ) -> tuple[list[tuple[int, int, Track, float]], list[tuple[int, int, str]]]:
        """One shot's clips (span, face track, multi-face fraction) and the frames it leaves out, with the reason.
        whole: the shot is the whole video (the reasons then say so, as a video's failure row)."""
        cfg, fps, k = self.cfg, VIDEO_FPS, self.cfg.detect_every
        checked = [(f, d) for f, d in detections if a <= f < b]
        max_gap = max(int(round(cfg.max_gap_s * fps)), k - 1)
        tracks = link_tracks(checked, max_gap)
        if not tracks:
            return [], [(a, b, "no face found in any frame" if whole else "no face (none found in the shot)")]
        main = pick_track(tracks, hint_box(record.spec.extra.get("crop_hint"), record.probe["width"],
                                           record.probe["height"]))
        other = {f for t in tracks if t is not main for f in t.frames}
        multi = len(other & set(main.frames)) / len(main.frames)   # over the frames where detection ran
        if multi > cfg.multi_face_min_fraction and cfg.multi_face == "drop":
            return [], [(a, b, f"several faces: a second face in {multi:.0%} of the frames (policy: drop)")]
        runs, lost = face_spans(main.frames, a, b, k, max_gap)
        min_len = int(round(cfg.min_clip_s * fps))
        dropped = [(s, e, "no face (the tracked face was not found)") for s, e in lost]
        short = [(s, e) for s, e in runs if e - s < min_len]
        if whole and short and len(short) == len(runs):
            return [], [(a, b, f"no face-continuous span of facetrack.min_clip_s ({cfg.min_clip_s:g} s) in "
                               f"{(b - a) / fps:.2f} s of video (face found in "
                               f"{len(main.frames) / max(len(checked), 1):.0%} of the checked frames)")]
        dropped += [(s, e, f"face span shorter than facetrack.min_clip_s ({(e - s) / fps:.2f} s < "
                           f"{cfg.min_clip_s:g} s)") for s, e in short]
        return [(s, e, main, multi) for s, e in runs if e - s >= min_len], dropped

    def _new_clip(self, record: ClipRecord, a: int, b: int, track: Track, multi: float) -> ClipRecord:
        cfg = self.cfg
        clip = copy.deepcopy(record, {id(record.frames): record.frames})   # frames held in memory: shared, not copied
        clip.start, clip.end = record.start + a / VIDEO_FPS, record.start + b / VIDEO_FPS
        clip.workdir = record.workdir / f"clip_{a:07d}"
        clip.workdir.mkdir(parents=True, exist_ok=True)
        clip.video = clip.workdir / "video.mp4"
        clip.meta["unit"] = "clip"     # its failure row (if a later stage drops it) is a clip's, not the video's
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
        if frames and any(held_too_small(frames[0], record, c.arrays["crop_box"], size) for c in clips):
            frames = None            # a crop needs more pixels than the reduced frames hold: decode again
        writers = [VideoWriter(c.video, width=size, height=size, fps=VIDEO_FPS, crf=cfg.crf, preset=cfg.preset,
                               keyframe_every=max(1, round(cfg.keyframe_s * VIDEO_FPS))) for c in clips]
        meshes: list[list[np.ndarray]] = [[] for _ in clips]
        scale = held_scale(frames[0], record) if frames else np.ones(3)
        try:
            for f, frame in enumerate(video_frames(record) if frames is None else frames):
                for i, (a, b) in enumerate(found):
                    if a <= f < b:
                        if f == a:
                            self._mesh.reset()       # a new clip: never carry the last one's face over
                        cx, cy, side = clips[i].arrays["crop_box"][f - a] * scale
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
