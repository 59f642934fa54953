"""Frames for the video generator, cut from a manifest's clips by the shared shard stream (posetalk_models.data.stream).

Each clip's `video.mp4` is decoded once, from the shard's bytes, at its stored size and resized to the training
size (posetalk_data.members.mp4_frames: decord's own scaling fails at some sizes), and several items are cut from
it. A generator item is a source frame and T = `targets` consecutive target frames of the same
clip, with what drives them:

  source           uint8 (3, S, S)
  target           uint8 (T, 3, S, S)
  motion           float32 (T, W, 10): around each target, yaw, pitch, roll and the 4 gaze angles (degrees), then the
                   face's position and scale in the crop relative to the source frame (dx, dy, dlog_s; face-scale
                   units, y down): the channels of posetalk_models.data.windows, but measured in the crop, where the
                   generator draws
  source_pose      float32 (7,): the source frame's yaw, pitch, roll and gaze
  speech           float32 (T, A, D): the speech features around each target; sync_speech (T, D) those of the targets
  lip_mask, lower_mask   float32 (T, 1, S, S): the lips and the face below the nose, from each target's landmarks
  mouth_box        float32 (T, 4): x0, y0, x1, y1 of each target's lower face in crop units (for the lip-sync expert)

A lip-sync item (`cut_sync`) is `sync_frames` consecutive mouth crops with a speech window that is either theirs
(label 1) or from elsewhere in the clip (label 0), as the Wav2Lip expert is trained. Mouth crops are cut by one
function (`crop_mouths`, differentiable) for the expert's data and for RefineNet's sync loss alike.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import Field

from posetalk_data.config import Section
from posetalk_data.members import mp4_frames
from posetalk_data.reading import read_samples

from posetalk_models.data.windows import DataConfig, resolve_features
from posetalk_models.data.stream import ClipNeed, Cut, ShardStream, data_loader, member, npy

MOTION_CHANNELS = 10


class FrameConfig(Section):
    size: int = Field(64, ge=16)                 # S: frames are decoded scaled to S x S
    speech: str | None = "auto"                  # speech member stem, "auto" (the manifest's) or None
    samples_per_clip: int = Field(4, ge=1)       # items cut from each decoded clip per pass
    targets: int = Field(1, ge=1)                # T: consecutive target frames per item (the sync loss needs 5)
    motion_window: int = Field(5, ge=1)          # W: frames of motion around the target (odd: centred)
    audio_window: int = Field(5, ge=1)           # A: frames of speech features around the target (5 = 0.2 s)
    sync_frames: int = Field(5, ge=1)            # frames of one lip-sync item
    sync_offset_min: int = Field(5, ge=1)        # a negative's speech lies at least this many frames away
    mouth_size: tuple[int, int] = (32, 64)       # (h, w) of a lip-sync item's mouth crops
    shuffle_buffer: int = Field(32, ge=1)
    resample: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Topology:
    """Landmark indices of one landmark layout (MediaPipe's 478-point mesh or the 68 points of FAN)."""
    eyes: tuple[tuple[int, int], tuple[int, int]]   # corners of the image-left eye, then the image-right eye
    lips: tuple[int, ...]                            # the outer lip contour, in order
    oval: tuple[int, ...]                            # the face outline
    nose_tip: int
    nose_base: tuple[int, ...]


TOPOLOGIES = {
    478: Topology(eyes=((33, 133), (362, 263)),
                  lips=(61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185),
                  oval=(10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
                        148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
                  nose_tip=1, nose_base=(98, 2, 327)),
    68: Topology(eyes=((36, 39), (42, 45)), lips=tuple(range(48, 60)), oval=tuple(range(17)), nose_tip=30,
                 nose_base=(31, 33, 35)),
}


def topology(landmarks: np.ndarray) -> Topology:
    n = landmarks.shape[-2]
    if n not in TOPOLOGIES:
        raise ValueError(f"landmarks with {n} points: the video models know 478 (MediaPipe) and 68 (FAN)")
    return TOPOLOGIES[n]


def face_frame(landmarks: np.ndarray) -> np.ndarray:
    """(T, N, 2+) landmarks in crop units (0..1) -> (T, 3): eye-centre midpoint x, y and inter-ocular distance."""
    topo = topology(landmarks)
    p = np.asarray(landmarks[..., :2], dtype=np.float64)
    eyes = [(p[:, a] + p[:, b]) / 2 for a, b in topo.eyes]
    return np.column_stack([(eyes[0] + eyes[1]) / 2, np.linalg.norm(eyes[1] - eyes[0], axis=-1)])


def crop_motion(pose: np.ndarray, gaze: np.ndarray, landmarks: np.ndarray, source: int) -> np.ndarray:
    """(T, 10) generator motion of a clip: angles and gaze as they are, the face's position and scale in the crop
    relative to frame `source` (face-scale units of the source frame)."""
    frame = face_frame(landmarks)
    c0, s0 = frame[source, :2], max(frame[source, 2], 1e-4)
    move = np.column_stack([(frame[:, :2] - c0) / s0, np.log(np.maximum(frame[:, 2], 1e-4) / s0)])
    return np.concatenate([pose[:, :3], gaze[:, :4], move], 1).astype(np.float32)


def masks(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2+) landmarks of one frame in crop units -> (lip mask, lower-face mask), float32 (size, size) in {0, 1}.

    Lips: the filled outer lip contour. Lower face: the convex hull of the outline below the nose tip and the base
    of the nose (mouth, chin, jaw)."""
    topo = topology(landmarks)
    p = np.asarray(landmarks[:, :2], dtype=np.float64) * size
    lips, lower = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
    cv2.fillPoly(lips, [np.round(p[list(topo.lips)]).astype(np.int32)], 1)
    oval = p[list(topo.oval)]
    below = np.concatenate([oval[oval[:, 1] >= p[topo.nose_tip, 1]], p[list(topo.nose_base)]])
    cv2.fillConvexPoly(lower, cv2.convexHull(np.round(below).astype(np.int32)), 1)
    return lips.astype(np.float32), lower.astype(np.float32)


def mouth_box(landmarks: np.ndarray, aspect: float) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in crop units around the lower face, widened or heightened to w/h = aspect."""
    topo = topology(landmarks)
    p = np.asarray(landmarks[:, :2], dtype=np.float64)
    oval = p[list(topo.oval)]
    below = np.concatenate([oval[oval[:, 1] >= p[topo.nose_tip, 1]], p[list(topo.nose_base)]])
    (x0, y0), (x1, y1) = below.min(0), below.max(0)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    w, h = max(w, h * aspect), max(h, w / aspect)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def rows(array: np.ndarray, centre: int, width: int) -> np.ndarray:
    """`width` rows of `array` centred on `centre`, clamped at the ends."""
    idx = np.clip(np.arange(centre - width // 2, centre - width // 2 + width), 0, len(array) - 1)
    return array[idx]


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def cut_pairs(cfg: FrameConfig) -> Cut:
    """The generator's cut: `samples_per_clip` items (a source frame, T consecutive targets) of one clip, decoded
    together."""
    n = cfg.targets

    def cut(sample: dict, rng: random.Random) -> list[dict]:
        pose, gaze, landmarks = sample["pose.npy"], sample["gaze.npy"], sample["landmarks.npy"]
        speech = member(sample, f"{cfg.speech}.npy").astype(np.float32) if cfg.speech else None
        t = len(pose)
        picks = [(rng.randrange(t), np.minimum(rng.randrange(max(t - n + 1, 1)) + np.arange(n), t - 1))
                 for _ in range(cfg.samples_per_clip)]
        frames = mp4_frames(sample["video.mp4"], [int(i) for s, g in picks for i in (s, *g)], cfg.size)
        items = []
        for k, (s, g) in enumerate(picks):
            motion = crop_motion(pose, gaze, landmarks, s)
            lips, lower = zip(*(masks(landmarks[i], cfg.size) for i in g))
            item = {"key": sample["key"], "frame": int(g[0]), "source": chw(frames[k * (n + 1)]),
                    "target": torch.stack([chw(f) for f in frames[k * (n + 1) + 1:(k + 1) * (n + 1)]]),
                    "motion": torch.from_numpy(np.stack([rows(motion, i, cfg.motion_window) for i in g])),
                    "source_pose": torch.from_numpy(motion[s, :7]),
                    "lip_mask": torch.from_numpy(np.stack(lips))[:, None],
                    "lower_mask": torch.from_numpy(np.stack(lower))[:, None],
                    "mouth_box": torch.tensor([mouth_box(landmarks[i], cfg.mouth_size[1] / cfg.mouth_size[0])
                                               for i in g], dtype=torch.float32)}
            if speech is not None:
                item["speech"] = torch.from_numpy(np.stack([rows(speech, i, cfg.audio_window) for i in g]))
                item["sync_speech"] = torch.from_numpy(speech[np.minimum(g, len(speech) - 1)])
            items.append(item)
        return items

    return cut


def crop_mouths(frames: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, 3, S, S) float frames + (n, 4) boxes in crop units -> (n, 3, h, w) crops (bilinear, differentiable)."""
    from torchvision.ops import roi_align

    side = frames.shape[-1]
    rois = torch.cat([torch.arange(len(frames), device=frames.device, dtype=frames.dtype)[:, None],
                      boxes.to(frames.dtype) * side], 1)
    return roi_align(frames, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def cut_sync(cfg: FrameConfig) -> Cut:
    """The lip-sync expert's cut: windows of `sync_frames` mouth crops, half of them with their own speech
    (label 1), half with speech at least `sync_offset_min` frames away in the same clip (label 0)."""
    n = cfg.sync_frames

    def cut(sample: dict, rng: random.Random) -> list[dict]:
        landmarks, speech = sample["landmarks.npy"], member(sample, f"{cfg.speech}.npy").astype(np.float32)
        t = min(len(landmarks), len(speech))
        if t < n + cfg.sync_offset_min + 1:
            return []
        # a negative's start needs speech at least sync_offset_min away on one side of it
        apart = [a for a in range(t - n + 1) if max(a, t - n - a) >= cfg.sync_offset_min]
        starts = [rng.randrange(t - n + 1) if k % 2 == 0 else rng.choice(apart) for k in range(cfg.samples_per_clip)]
        frames = mp4_frames(sample["video.mp4"], [s + i for s in starts for i in range(n)], cfg.size)
        boxes = torch.tensor([mouth_box(landmarks[s + i], cfg.mouth_size[1] / cfg.mouth_size[0])
                              for s in starts for i in range(n)], dtype=torch.float32)
        crops = crop_mouths(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), boxes, cfg.mouth_size)
        crops = crops.round().clamp(0, 255).to(torch.uint8).view(len(starts), 3 * n, *cfg.mouth_size)
        items = []
        for k, start in enumerate(starts):
            label = k % 2 == 0
            far = [a for a in range(t - n + 1) if abs(a - start) >= cfg.sync_offset_min]
            audio = start if label else rng.choice(far)
            items.append({"key": sample["key"], "mouth": crops[k], "label": torch.tensor(float(label)),
                          "speech": torch.from_numpy(speech[audio:audio + n])})
        return items

    return cut


def resolve_speech(manifest_path: str | Path, cfg: FrameConfig) -> FrameConfig:
    """"auto" -> the manifest's speech features (hubert > wav2vec2 > mel), checked like the pose models'."""
    data = resolve_features(manifest_path, DataConfig(speech=cfg.speech, text=None))
    return cfg.model_copy(update={"speech": data.speech})


def speech_dim(manifest_path: str | Path, cfg: FrameConfig) -> int:
    """D of the manifest's speech features (0 without), from its first sample: the models are sized by the data."""
    if cfg.speech is None:
        return 0
    for _, sample in read_samples(manifest_path):
        return int(npy(sample[f"{cfg.speech}.npy"]).shape[1])
    raise ValueError(f"{manifest_path}: no samples")


def frame_stream(manifest_path: str | Path, cfg: FrameConfig, *, kind: str = "pairs", every_rank: bool = False
                 ) -> ShardStream:
    """Generator pairs (kind "pairs") or lip-sync windows (kind "sync") read from a manifest's shards."""
    cfg = resolve_speech(manifest_path, cfg)
    if kind == "sync" and cfg.speech is None:
        raise ValueError("the lip-sync expert needs speech features (data.speech)")
    members = {"video.mp4", "landmarks.npy", "pose.npy", "gaze.npy", *([f"{cfg.speech}.npy"] if cfg.speech else [])}
    cut = cut_pairs(cfg) if kind == "pairs" else cut_sync(cfg)
    need = None if kind == "pairs" else ClipNeed(cfg.sync_frames + cfg.sync_offset_min + 1, "lip-sync item",
                                                 "data.sync_frames + data.sync_offset_min + 1",
                                                 "lower data.sync_offset_min (or data.sync_frames)")
    return ShardStream(manifest_path, members, cut, per_clip=cfg.samples_per_clip, shuffle_buffer=cfg.shuffle_buffer,
                       resample=cfg.resample, seed=cfg.seed, every_rank=every_rank, need=need)


def frame_loader(manifest_path: str | Path, cfg: FrameConfig, *, batch_size: int, num_workers: int = 0,
                 kind: str = "pairs", every_rank: bool = False) -> torch.utils.data.DataLoader:
    return data_loader(frame_stream(manifest_path, cfg, kind=kind, every_rank=every_rank), batch_size=batch_size,
                       num_workers=num_workers)

