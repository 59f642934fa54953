"""Training windows of the pose models, cut from a manifest's clips by the shared shard stream (posetalk_models.data.stream).

Channels (C = 10, `CHANNELS`): yaw, pitch, roll (deg), gaze left yaw/pitch, right yaw/pitch (deg), then the head's
translation and scale *relative to the window's first frame* in face-scale units: dx = (x - x0) / s0,
dy = (y - y0) / s0, ds = log(s / s0). Making them window-relative and scale-normalised removes the source video's
resolution and framing, which carry no motion. `translation=False` keeps only the 7 angle channels.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from posetalk_data.config import Section
from posetalk_data.reading import load_manifest, read_samples

from posetalk_models.data.stream import Cut, ShardStream, data_loader, member, npy

CHANNELS = ("yaw", "pitch", "roll", "gaze_l_yaw", "gaze_l_pitch", "gaze_r_yaw", "gaze_r_pitch", "dx", "dy", "dlog_s")
ANGLE_CHANNELS = 7  # the first 7 channels are in degrees


class DataConfig(Section):
    window: int = Field(32, ge=2)    # frames per window (25 fps)
    speech: str | None = "auto"     # speech member stem (hubert, wav2vec2, mel), "auto" (the manifest's) or None
    text: str | None = "auto"       # prompt-embedding member stem (clip_<model>, minilm), "auto" or None
    translation: bool = True         # add the 3 window-relative translation/scale channels
    windows_per_clip: int = Field(4, ge=1)   # windows cut from each clip per pass (clips are long, shards few)
    shuffle_buffer: int = Field(64, ge=1)    # windows held for shuffling
    resample: bool = True            # infinite, shards drawn with replacement (training); False = one epoch
    seed: int = 0


SPEECH_PREFERENCE = ("hubert", "wav2vec2", "mel")   # "auto" takes the first the manifest has


def resolve_features(manifest_path: str | Path, cfg: DataConfig) -> DataConfig:
    """Replace "auto" speech/text stems by the manifest's own (speech: hubert > wav2vec2 > mel; text: clip_* >
    minilm); a named stem the manifest lacks is an error that says how to add it."""
    members = {Path(m).stem for m in load_manifest(manifest_path).get("members", {}) if m.endswith(".npy")}
    found = {"speech": [s for s in SPEECH_PREFERENCE if s in members],
             "text": sorted(m for m in members if m.startswith("clip_")) + [m for m in members if m == "minilm"]}
    update = {}
    for role in ("speech", "text"):
        stem = getattr(cfg, role)
        if stem == "auto":
            if not found[role]:
                raise ValueError(f"{manifest_path}: no {role} features in the shards (add them with "
                                 f"`posetalk-data extend`, or set data.{role} to null)")
            update[role] = found[role][0]
        elif stem is not None and stem not in members:
            raise ValueError(f"{manifest_path}: no {stem}.npy in the shards (have: {', '.join(sorted(members))})")
    return cfg.model_copy(update=update)


def feature_versions(manifest_path: str | Path, speech: str | None, text: str | None) -> dict:
    """{"speech": {"member", "versions"}, "text": {...}} from the manifest, for generation to reproduce."""
    versions = load_manifest(manifest_path).get("versions", {})
    out = {}
    for role, stem in (("speech", speech), ("text", text)):
        if stem is None:
            continue
        if f"{stem}.npy" not in versions:
            raise ValueError(f"{manifest_path}: no {stem}.npy features recorded (run `posetalk-data extend`)")
        out[role] = {"member": f"{stem}.npy", "versions": json.loads(versions[f"{stem}.npy"])}
    return out


def motion_features(pose: np.ndarray, gaze: np.ndarray, *, translation: bool = True) -> np.ndarray:
    """pose [T,6], gaze [T,4] -> [T,C] float32 (C = 10 or 7), translation relative to frame 0."""
    parts = [pose[:, :3], gaze[:, :4]]
    if translation:
        s0 = max(float(pose[0, 5]), 1e-3)
        parts += [(pose[:, 3:5] - pose[0, 3:5]) / s0, np.log(np.maximum(pose[:, 5:6], 1e-3) / s0)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def pose_stats(manifest_path: str | Path, *, window: int = 32, translation: bool = True) -> dict:
    """Per-channel mean/std over every window-start of every sample (JSON-able, stored with checkpoints).

    Translation channels depend on the window start, so they are measured over windows starting every
    `window // 2` frames; angle channels over every frame."""
    rows = []
    for _, sample in read_samples(manifest_path):
        pose, gaze = npy(sample["pose.npy"]), npy(sample["gaze.npy"])
        for start in range(0, max(len(pose) - window, 0) + 1, max(window // 2, 1)):
            rows.append(motion_features(pose[start:start + window], gaze[start:start + window],
                                        translation=translation))
    if not rows:
        raise ValueError(f"{manifest_path}: no samples to compute statistics from")
    x = np.concatenate(rows).astype(np.float64)
    names = CHANNELS[:x.shape[1]]
    return {"channels": list(names), "mean": x.mean(0).tolist(),
            "std": np.maximum(x.std(0), 1e-3).tolist(), "frames": int(len(x))}


def normalise(x: torch.Tensor, stats: dict) -> torch.Tensor:
    mean = torch.as_tensor(stats["mean"], dtype=x.dtype, device=x.device)
    return (x - mean) / torch.as_tensor(stats["std"], dtype=x.dtype, device=x.device)


def denormalise(x: torch.Tensor, stats: dict) -> torch.Tensor:
    std = torch.as_tensor(stats["std"], dtype=x.dtype, device=x.device)
    return x * std + torch.as_tensor(stats["mean"], dtype=x.dtype, device=x.device)


def cut_windows(cfg: DataConfig) -> Cut:
    """The pose models' cut: `windows_per_clip` random windows of a clip, each {"pose": (window, C) f32, "length":
    int, "speech": (window, D) f32, "text": (D,) f32, "key": str}. Clips shorter than `window` are padded with
    their last frame; "length" is the real frame count."""
    def cut(sample: dict, rng: random.Random) -> list[dict]:
        pose, gaze = sample["pose.npy"], sample["gaze.npy"]
        speech = member(sample, f"{cfg.speech}.npy") if cfg.speech else None
        text = member(sample, f"{cfg.text}.npy") if cfg.text else None
        return [_window(cfg, sample["key"], pose, gaze, speech, text, rng) for _ in range(cfg.windows_per_clip)]

    return cut


def _window(cfg: DataConfig, key, pose, gaze, speech, text, rng) -> dict:
    w, t = cfg.window, len(pose)
    start = rng.randint(0, max(t - w, 0))
    idx = np.minimum(np.arange(start, start + w), t - 1)  # pad short clips with their last frame
    out = {"key": key, "length": min(w, t),
           "pose": torch.from_numpy(motion_features(pose[idx], gaze[idx], translation=cfg.translation))}
    if speech is not None:
        out["speech"] = torch.from_numpy(speech[np.minimum(idx, len(speech) - 1)].astype(np.float32))
    if text is not None:
        out["text"] = torch.from_numpy(text[rng.randrange(len(text))].astype(np.float32))
    return out


def pose_windows(manifest_path: str | Path, cfg: DataConfig = DataConfig(), *, every_rank: bool = False
                 ) -> ShardStream:
    """Pose+gaze windows with their speech and prompt features, read from a manifest's shards."""
    cfg = resolve_features(manifest_path, cfg)
    members = {"pose.npy", "gaze.npy", *(f"{stem}.npy" for stem in (cfg.speech, cfg.text) if stem)}
    return ShardStream(manifest_path, members, cut_windows(cfg), per_clip=cfg.windows_per_clip,
                       shuffle_buffer=cfg.shuffle_buffer, resample=cfg.resample, seed=cfg.seed, every_rank=every_rank)


def loader(manifest_path: str | Path, cfg: DataConfig, *, batch_size: int, num_workers: int = 0,
           every_rank: bool = False, **kwargs) -> torch.utils.data.DataLoader:
    """DataLoader over pose windows; default collate stacks tensors and lists keys. every_rank: in epoch mode, read
    the whole manifest whatever this process's DDP rank (held-out figures computed on rank 0)."""
    return data_loader(pose_windows(manifest_path, cfg, every_rank=every_rank), batch_size=batch_size,
                       num_workers=num_workers, **kwargs)
