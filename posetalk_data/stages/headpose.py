"""Stages 5 and 6, head pose and gaze from the 3D face mesh (the math lives in posetalk_data.geometry).

Pose: a similarity fit of the mesh's rigid points to the project's frontal face template gives yaw, pitch and
roll, and the face centre and scale mapped back to source pixels. Gaze (posetalk_data.gaze): the iris relative to
each eye, with the head rotation removed, the person's constant left-right offset taken out, and frames with a shut
eye filled in and listed. Both are smoothed with a centred filter, so without lag.
"""
from __future__ import annotations

import numpy as np

from ..config import PipelineConfig, PoseConfig
from ..gaze import gaze_track, mouth_opening
from ..geometry import (HeadPoseFit, fit_head_pose, landmarks_to_face_frame, load_face_template, rotation_to_euler,
                        smooth_zero_phase)
from ..schema import VIDEO_FPS, ClipRecord, Member
from .base import Resources, Stage


def mesh_in_face_frame(mesh: np.ndarray, crop_size: int) -> np.ndarray:
    """(T, 478, 3) MediaPipe mesh (x, y in 0..1 of the crop, z in crop widths) -> face frame in crop pixels."""
    return landmarks_to_face_frame(mesh.astype(np.float64) * crop_size)


def pose_track(points: np.ndarray, crop_box: np.ndarray, crop_size: int, template: np.ndarray,
               smooth_s: float) -> tuple[np.ndarray, HeadPoseFit]:
    """Face-frame points (T, N, 3) in crop pixels and crop boxes (T, 3: cx, cy, side in source pixels) ->
    pose (T, 6): yaw, pitch, roll (deg), face centre x, y and scale (inter-ocular distance) in source pixels;
    also the per-frame fit (in crop pixels)."""
    fit = fit_head_pose(points, template)
    k = crop_box[:, 2] / crop_size                       # source pixels per crop pixel
    x0 = crop_box[:, 0] - crop_box[:, 2] / 2
    y0 = crop_box[:, 1] - crop_box[:, 2] / 2
    centre_x = x0 + fit.translation[:, 0] * k
    centre_y = y0 - fit.translation[:, 1] * k            # face frame y points up
    pose = np.column_stack([rotation_to_euler(fit.rotation), centre_x, centre_y, fit.scale * k])
    return smooth_zero_phase(pose, VIDEO_FPS, smooth_s), fit


class HeadPoseStage(Stage):
    name = "headpose"
    resources = Resources(cpus=0.25)   # a few small linear-algebra ops per frame
    members = (
        Member("pose.npy", "yaw, pitch, roll (deg); face centre x, y and scale in source pixels", "float32[T,6]",
               versions=("face_mesh", "landmarks", "face_template")),
        Member("gaze.npy", "yaw, pitch (deg) of the image-left eye, then the image-right eye, eye-in-head; the clip's "
               "median left-right difference removed; frames with a shut eye filled in (meta "
               "quality.gaze_filled_spans)", "float32[T,4]", versions=("face_mesh", "face_template", "gaze")),
    )

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.pose, cfg.facetrack.crop_size)

    def __init__(self, cfg: PoseConfig, crop_size: int):
        self.cfg = cfg
        self.crop_size = crop_size
        self._template = None

    def inputs(self) -> list[str]:
        return ["mesh", "crop_box"]

    def outputs(self) -> list[str]:
        return ["pose", "gaze", "eyes_closed", "mouth_opening"]

    def setup(self) -> None:
        self._template = load_face_template()

    def versions(self) -> dict[str, str]:
        import hashlib

        if self._template is None:
            self.setup()
        digest = hashlib.sha256(np.ascontiguousarray(self._template).tobytes()).hexdigest()[:12]
        return {"face_template": f"face_template_mediapipe478 sha256:{digest}",
                "gaze": "iris-in-eye v2: eyes placed by their corners and the head fit, radius from the iris size, "
                        "rest direction as an angle, the clip's median left-right offset removed, shut eyes filled"}

    def process(self, record: ClipRecord) -> ClipRecord:
        if self._template is None:
            self.setup()
        points = mesh_in_face_frame(record.arrays["mesh"], self.crop_size)
        pose, fit = pose_track(points, record.arrays["crop_box"], self.crop_size, self._template,
                               self.cfg.smooth_s)
        gaze = gaze_track(points, fit, self._template, VIDEO_FPS, self.cfg.gaze_smooth_s, self.cfg.eye_closed_below)
        record.arrays["pose"] = pose.astype(np.float32)
        record.arrays["gaze"] = gaze.gaze.astype(np.float32)
        record.arrays["eyes_closed"] = gaze.closed          # (T, 2) for the quality figures
        record.arrays["mouth_opening"] = mouth_opening(points)
        record.meta["pose_fit_rms"] = float(np.nanmean(fit.rms))
        record.meta["gaze_vergence_offset"] = [round(float(v), 2) for v in gaze.vergence]
        return record
