"""Face tracks of media outside the shards (a portrait, a reference video, a generated video), through the data
pipeline's own stages, so generation and evaluation see faces exactly as the trainers did.

probe -> facetrack (detection, crop) -> landmarks (MediaPipe mesh) -> headpose (pose, gaze): the stages of
posetalk_data.pipeline, with the crop settings of the generator's training build. A portrait is read as a short
still video; frames held in memory (a generated video being scored) go to the stages as they are, without an mp4
(posetalk_data.schema.ClipRecord.frames). What fails a clip in a build (no face, several faces under a `drop`
policy, an unreadable file) is a ValueError here, with the stage's reason.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posetalk_data.config import PipelineConfig
from posetalk_data.images import read_image, still_video
from posetalk_data.media import MediaError, read_frames
from posetalk_data.schema import VIDEO_FPS, ClipRecord, VideoSpec

from posetalk_models.data.windows import motion_features
from posetalk_models.data.frames import face_frame

EXTRACT_STAGES = ("probe", "facetrack", "landmarks", "headpose")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
# An image is read as a still video this long: a few identical frames serve every stage, and a large photo is
# encoded for each one (2 s of a 4096 px still took half a minute)
STILL_SECONDS = 0.4


@dataclass
class FaceTrack:
    """One face clip: crop frames (T, S, S, 3) uint8 at the crop size, pose (T, 6), gaze (T, 4), landmarks
    (T, 478, 3) in crop units, and where the clip lies in the input (seconds)."""
    frames: np.ndarray
    pose: np.ndarray
    gaze: np.ndarray
    landmarks: np.ndarray
    start: float
    end: float

    def angles(self) -> np.ndarray:
        """(T, 7): yaw, pitch, roll, then the two eyes' gaze yaw/pitch (degrees)."""
        return motion_features(self.pose, self.gaze, translation=False)

    def movement(self) -> np.ndarray:
        """(T, 3): the face's position and scale in the source frame relative to the first frame (face-scale units:
        dx, dy, dlog_s), the pose models' translation channels."""
        return motion_features(self.pose, self.gaze)[:, 7:]

    def mouth_opening(self) -> np.ndarray:
        """(T,): inner-lip gap (MediaPipe 13-14) over the inter-ocular distance."""
        gap = np.linalg.norm(self.landmarks[:, 13, :2] - self.landmarks[:, 14, :2], axis=-1)
        return (gap / np.maximum(face_frame(self.landmarks)[:, 2], 1e-6)).astype(np.float32)


def extraction_config(pipeline: dict | None, *, single_face: bool, crop_size: int | None = None,
                      min_seconds: float = 1.0) -> PipelineConfig:
    """The training build's face settings (crop size, scale, detector); cheap speech/text (unused here).
    single_face: a second face anywhere is an error (a portrait), not a flag. crop_size: another crop size (the
    evaluator measures faces at 256 px whatever the build's size). min_seconds: the shortest video and face span
    kept (the evaluator lowers it for clips under a second)."""
    tree = dict(pipeline or {})
    tree.update(profile="offline", speech={"backend": "mel"}, text={"encoder": "minilm"})
    cfg = PipelineConfig.model_validate(tree)
    face = {"crop_size": crop_size} if crop_size else {}
    if single_face:
        face.update(multi_face="drop", multi_face_min_fraction=0.0)
    return shortest(cfg.model_copy(update={"facetrack": cfg.facetrack.model_copy(update=face)}), min_seconds)


def shortest(cfg: PipelineConfig, seconds: float) -> PipelineConfig:
    """cfg keeping videos and face spans down to `seconds` long."""
    return cfg.model_copy(update={"facetrack": cfg.facetrack.model_copy(update={"min_clip_s": seconds}),
                                  "normalise": cfg.normalise.model_copy(update={"min_seconds": seconds})})


class FaceExtractor:
    """The extraction stages (face detection, MediaPipe mesh, head pose), set up once per face config and kept: a
    portrait, a reference video and every evaluated clip reuse them instead of loading the models per call.
    `setups` counts the stage lists set up (the evaluator's cost: one per process for clips of one length)."""

    def __init__(self):
        self._stages: dict[str, list] = {}
        self.setups = 0

    def stages(self, cfg: PipelineConfig) -> list:
        from posetalk_data.pipeline import build_stages

        key = cfg.model_dump_json()
        if key not in self._stages:
            stages = [s for s in build_stages(cfg) if s.name in EXTRACT_STAGES]
            for stage in stages:
                stage.setup()
            self._stages[key], self.setups = stages, self.setups + 1
        return self._stages[key]

    def tracks(self, source: str | Path | np.ndarray, cfg: PipelineConfig) -> list[FaceTrack]:
        """Every face clip the facetrack stage finds in a video (or image) file, or in (T, H, W, 3) uint8 frames at
        25 fps held in memory (nothing is encoded for them), longest first; ValueError with the stage's reason when
        there is none."""
        held = isinstance(source, np.ndarray)
        if held and (source.ndim != 4 or source.shape[-1] != 3 or source.dtype != np.uint8 or not len(source)):
            raise ValueError(f"frames of shape {source.shape} and type {source.dtype}: give (T, H, W, 3) uint8 RGB")
        name = "frames" if held else Path(source)
        if not held and not name.is_file():
            raise ValueError(f"{name}: no such file")
        image = not held and name.suffix.lower() in IMAGE_SUFFIXES
        stages = self.stages(shortest(cfg, STILL_SECONDS / 2) if image else cfg)
        with tempfile.TemporaryDirectory(prefix="posetalk_extract_") as tmp:
            video = name
            if image:
                video = still_video(image_frame(name), Path(tmp) / "still.mp4", seconds=STILL_SECONDS, fps=VIDEO_FPS)
            spec = VideoSpec(source="generate", video_id=str(name if held else name.name), path=str(video))
            records = [ClipRecord(spec=spec, workdir=Path(tmp), frames=source if held else None)]
            for stage in stages:
                records = stage.process_batch(records)
            failed = [r for r in records if not r.ok]
            if failed and not any(r.ok for r in records):
                stage, reason = next(iter(failed[0].errors.items()))
                raise ValueError(f"{name}: {reason} (stage {stage})")
            tracks = [FaceTrack(frames=np.stack(list(read_frames(r.video, fps=VIDEO_FPS))),
                                pose=r.arrays["pose"], gaze=r.arrays["gaze"], landmarks=r.arrays["mesh"],
                                start=r.start, end=r.end) for r in records if r.ok]
        return sorted(tracks, key=lambda t: -len(t.frames))


EXTRACTOR = FaceExtractor()      # one per process


def face_tracks(source: str | Path | np.ndarray, cfg: PipelineConfig) -> list[FaceTrack]:
    """Every face clip in a video (or image) file or in 25 fps frames held in memory ((T, H, W, 3) uint8), longest
    first, through the process's one FaceExtractor."""
    return EXTRACTOR.tracks(source, cfg)


def image_frame(path: str | Path) -> np.ndarray:
    """An image file's picture (an animated one's first frame), or a ValueError saying why it cannot be read."""
    try:
        return read_image(path)[0]
    except MediaError as err:
        raise ValueError(f"{path}: {err}") from None


def portrait(image: str | Path, pipeline: dict | None) -> FaceTrack:
    """The portrait's face, cropped as in training (one frame): exactly one face, else a ValueError."""
    path = Path(image)
    try:
        track = face_tracks(path, extraction_config(pipeline, single_face=True))[0]
    except ValueError as err:
        if "several faces" in str(err):
            raise ValueError(f"{path}: more than one face; crop the image to the person to animate") from None
        raise
    middle = len(track.frames) // 2      # a still: every frame shows the same face
    return FaceTrack(track.frames[middle:middle + 1], track.pose[middle:middle + 1], track.gaze[middle:middle + 1],
                     track.landmarks[middle:middle + 1], 0.0, 0.0)
