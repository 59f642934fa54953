"""Stage 4, dense landmarks on the face crop.

MediaPipe Face Mesh (478 points with iris, weights inside the mediapipe wheel) always runs: the pose and gaze
stages need its 3D mesh. It runs inside the facetrack stage's crop pass (`MeshTracker`, on each crop before it is
encoded), so no frame is decoded twice for it; this stage checks how often it found the face, fills short gaps,
and picks what is stored as `landmarks.npy`: that mesh, or the 68 points of FAN (face-alignment's 2DFAN4, on the
encoded crops), loaded from the torch hub cache or a local file.
"""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from ..config import LandmarksConfig, PipelineConfig
from ..media import read_frames
from ..schema import VIDEO_FPS, ClipRecord, Member
from ..weights import WEIGHT_FILES, pull_command
from .base import ClipFailure, Resources, Stage

FAN_WEIGHTS = WEIGHT_FILES["fan"]
FAN_FILE = FAN_WEIGHTS.filename


def fill_gaps(points: np.ndarray) -> np.ndarray:
    """Linearly interpolate frames that are all-NaN (no face found) from their neighbours in time."""
    found = ~np.isnan(points).reshape(len(points), -1).any(1)
    if found.all() or not found.any():
        return points
    t = np.arange(len(points))
    flat = points.reshape(len(points), -1)
    filled = np.stack([np.interp(t, t[found], flat[found, j]) for j in range(flat.shape[1])], 1)
    return filled.reshape(points.shape).astype(points.dtype)


def fan_weights_path(cfg: LandmarksConfig) -> Path:
    return Path(cfg.fan_weights).expanduser() if cfg.fan_weights else FAN_WEIGHTS.path


class FanLandmarks:
    """face-alignment's FAN network run on our own face crops (its detector is not needed)."""

    def __init__(self, weights: Path, device: str = "cpu"):
        import torch
        from face_alignment.models import FAN

        state = torch.load(weights, map_location=device, weights_only=True)
        modules = len({k.split(".")[0] for k in state if k.startswith("m") and k.split(".")[0][1:].isdigit()})
        self.net = FAN(num_modules=modules).to(device).eval()
        self.net.load_state_dict(state)
        self.device = device

    def __call__(self, frames: list[np.ndarray], face_side: float) -> tuple[np.ndarray, np.ndarray]:
        """Frames with a centred face of `face_side` px -> (n, 68, 2) pixel points and (n, 68) heatmap scores."""
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, crop, get_preds_fromhm

        size = frames[0].shape[0]
        center = np.array([size / 2, size / 2 - face_side * CENTER_Y_OFFSET])
        scale = 2 * face_side / 195.0      # face-alignment's detectors use a reference scale of 195
        batch = np.stack([crop(f, center, scale).transpose(2, 0, 1) for f in frames]).astype(np.float32) / 255
        with torch.no_grad():
            heat = self.net(torch.from_numpy(batch).to(self.device))
        heat = (heat[-1] if isinstance(heat, list) else heat).float().cpu().numpy()
        _, points, scores = get_preds_fromhm(heat, center, scale)
        return points.reshape(len(frames), 68, 2), scores.reshape(len(frames), 68)


class MeshTracker:
    """MediaPipe Face Mesh in video mode (it tracks the face from frame to frame): a crop -> (478, 3) points in
    crop units (x, y in 0..1, z in crop widths), NaN where no face is found. `reset()` before each clip, so a face is
    never carried over from the last one."""

    def __init__(self):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                     refine_landmarks=True, min_detection_confidence=0.5,
                                                     min_tracking_confidence=0.5)

    def reset(self) -> None:
        self._mesh.reset()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        result = self._mesh.process(frame).multi_face_landmarks
        if not result:
            return np.full((478, 3), np.nan, np.float32)
        return np.array([(p.x, p.y, p.z) for p in result[0].landmark], np.float32)


class LandmarksStage(Stage):
    name = "landmarks"
    resources = Resources(cpus=1)
    members = (Member("landmarks.npy", "dense landmarks in crop coordinates, 0..1 (z in crop widths)", "float16[T,N,3]",
                      versions=("face_mesh", "landmarks")),)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.landmarks, cfg.facetrack.crop_scale)

    def __init__(self, cfg: LandmarksConfig, crop_scale: float):
        self.cfg = cfg
        self.crop_scale = crop_scale
        self._fan = None
        self._ready = False

    def inputs(self) -> list[str]:
        return ["video", "mesh_raw"]

    def outputs(self) -> list[str]:
        return ["mesh", "landmarks"]

    def check(self) -> None:
        """Fail before any work when the selected backend's weights are missing."""
        if self.cfg.backend == "fan" and not fan_weights_path(self.cfg).is_file():
            raise FileNotFoundError(
                f"FAN landmark weights not found at {fan_weights_path(self.cfg)}. On a machine with internet, run "
                f"`{pull_command(FAN_WEIGHTS.name)}` (it places {FAN_WEIGHTS.url} at {FAN_WEIGHTS.path}, the "
                "torch hub cache), or set "
                "landmarks.fan_weights=/path/to/file in the pipeline YAML or as an override; or use "
                "landmarks.backend=mediapipe, which needs no download.")

    def setup(self) -> None:
        self.check()
        if self.cfg.backend == "fan":
            self._fan = FanLandmarks(fan_weights_path(self.cfg), self.cfg.device)
        self._ready = True

    def versions(self) -> dict[str, str]:
        out = {"face_mesh": f"mediapipe {version('mediapipe')} face_mesh refine_landmarks (478 points)"}
        if self.cfg.backend == "fan":
            import face_alignment

            out["landmarks"] = f"face-alignment {face_alignment.__version__} {fan_weights_path(self.cfg).name}"
        return out

    def process(self, record: ClipRecord) -> ClipRecord:
        if not self._ready:
            self.setup()
        mesh = record.arrays.pop("mesh_raw")                       # (T, 478, 3), NaN where not found
        found = float((~np.isnan(mesh[:, 0, 0])).mean()) if len(mesh) else 0.0
        if found < self.cfg.min_found_fraction:
            raise ClipFailure(f"face mesh found in only {found:.0%} of the crop's frames "
                              f"(minimum {self.cfg.min_found_fraction:.0%})")
        record.arrays["mesh"] = fill_gaps(mesh)
        record.meta["landmarks_found_fraction"] = found
        if self._fan is None:
            record.arrays["landmarks"] = record.arrays["mesh"]
            record.meta["landmark_confidence"] = record.meta.get("detection_score")
        else:
            points, scores = self._fan_track(record.video)
            record.arrays["landmarks"] = np.concatenate([points, np.zeros_like(points[..., :1])], -1)
            record.meta["landmark_confidence"] = float(scores.mean())
        record.meta["landmarks_backend"] = self.cfg.backend
        return record

    def _fan_track(self, video) -> tuple[np.ndarray, np.ndarray]:
        """FAN on every frame of the encoded crop, in batches: ((T, 68, 2) points in crop units, (T, 68) scores)."""
        points, scores, batch, size = [], [], [], None
        for frame in read_frames(video, fps=VIDEO_FPS):
            size = frame.shape[0]
            batch.append(frame)
            if len(batch) == 16:
                self._run_fan(batch, size, points, scores)
        if batch:
            self._run_fan(batch, size, points, scores)
        return (np.concatenate(points) / size).astype(np.float32), np.concatenate(scores)

    def _run_fan(self, batch: list[np.ndarray], size: int, points: list, scores: list) -> None:
        p, s = self._fan(batch, size / self.crop_scale)
        points.append(p)
        scores.append(s)
        batch.clear()
