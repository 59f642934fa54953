"""Hard scene cuts, and a video's frames split into shots at them (used by the facetrack stage before it links faces
into tracks, so that no track, and no clip, spans a cut).

PySceneDetect's detectors are fed the frames the face tracker decodes anyway, downscaled (`cuts.max_side`), through
their frame API: nothing is decoded a second time. Frames within `cuts.trim_s` of a cut, on either side, belong to
no shot (a cut found a frame off, a dissolve or a compression smear must not reach a clip); the facetrack stage
lists them as dropped time with the reason.
"""
from __future__ import annotations

import cv2
import numpy as np

from .config import CutsConfig
from .schema import VIDEO_FPS
from .tracking import gaps

Span = tuple[int, int]          # half-open frame span [a, b)


class CutDetector:
    """One video's cuts: call it with every decoded frame in order (RGB, any size); `cuts` are the first frames of
    the new shots. A fresh detector per video (PySceneDetect's detectors keep the previous frames)."""

    def __init__(self, cfg: CutsConfig):
        from scenedetect import FrameTimecode
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        self.cfg, self.cuts = cfg, []
        self._timecode = FrameTimecode
        min_len = max(int(round(cfg.min_scene_s * VIDEO_FPS)), 1)
        if cfg.detector == "adaptive":
            self._detector = AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_scene_len=min_len,
                                              min_content_val=cfg.min_content_val)
        elif cfg.detector == "content":
            self._detector = ContentDetector(threshold=cfg.content_threshold, min_scene_len=min_len)
        else:
            self._detector = None

    def __call__(self, index: int, frame: np.ndarray) -> None:
        if self._detector is None:
            return
        h, w = frame.shape[:2]
        k = min(1.0, self.cfg.max_side / max(h, w))
        small = cv2.resize(frame, (max(2, round(w * k)), max(2, round(h * k))), interpolation=cv2.INTER_LINEAR)
        # PySceneDetect reads BGR (its hue channel would otherwise be another colour's)
        found = self._detector.process_frame(self._timecode(index, float(VIDEO_FPS)),
                                             cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        self.cuts += [t.frame_num for t in found if t.frame_num > 0]


def merged(spans: list[Span]) -> list[Span]:
    """Overlapping or touching spans joined, sorted."""
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def shots(frames: int, cuts: list[int], trim: int) -> tuple[list[Span], list[tuple[int, int, list[int]]]]:
    """([a, b) shots between the cuts, the trimmed frames left out), and the trimmed spans with the cuts inside each:
    `trim` frames on each side of every cut (spans of nearby cuts joined). Together they cover [0, frames); a cut
    with nothing trimmed still ends a shot."""
    # with trim 0 a cut's span is empty but still listed: every cut found is on record
    trims = merged([(max(0, c - trim), min(frames, c + trim)) for c in cuts])
    bounds = sorted({0, frames, *(c for c in cuts if 0 < c < frames)})
    pieces = [(s, e) for a, b in zip(bounds, bounds[1:]) for s, e in gaps(trims, a, b)]
    return pieces, [(s, e, [c for c in cuts if s <= c <= e]) for s, e in trims]
