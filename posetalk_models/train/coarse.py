"""CoarseNet training: the source frame animated into each target frame's head pose, gaze and coarse mouth.

  posetalk-train coarse --manifest M --out RUN [--holdout H]
"""
from __future__ import annotations

from pathlib import Path

import torch

from posetalk_models.nets.cascade import Cascade
from posetalk_models.train.config import TrainCoarseConfig, VideoLossConfig
from posetalk_models.train.losses import pyramid_l1
from posetalk_models.train.video_objective import VideoObjective, prepare, run_stage, shares, stage_net


class CoarseObjective(VideoObjective):
    """The warped source's pyramid L1 (`loss.warp`) always; the edited frame's terms after `warp_only_steps`
    (weighted 0 before, so the editing net is in every step's graph, as DDP's static graph wants)."""

    stage = "coarse"

    def __init__(self, model, loss: VideoLossConfig, warp_only_steps: int):
        super().__init__(model, None, loss)
        self.warp_only_steps, self.step = warp_only_steps, 0

    def set_step(self, step: int) -> None:
        self.step = step

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = self.inputs(batch)
        out = self.model(x["source"], x["motion"], x["source_pose"], x["speech"])
        warp = pyramid_l1(out["warped"], x["target"])
        image = self.image_loss(out["image"], x["target"])
        joint = float(self.step >= self.warp_only_steps)
        loss = self.loss_cfg.warp * warp + joint * image.pop("total")
        return {"loss": loss, "warp_l1": warp.detach(), **image,
                **shares({"copy": x["source"], "coarse": out["image"]}, x["target"], x["lips"])}


def make_objective(cfg: TrainCoarseConfig, speech_dim: int, frozen: Cascade | None = None) -> CoarseObjective:
    """A fresh CoarseNet's objective (cfg.data resolved; speech_dim: the manifest's speech feature size). The
    first stage builds on no frozen one: `frozen` is there so every video family is made alike."""
    if frozen is not None:
        raise ValueError("CoarseNet is the cascade's first stage: it is trained over no frozen stage")
    return CoarseObjective(stage_net("coarse", cfg, speech_dim), cfg.loss, cfg.warp_only_steps)


def train_coarse(manifest: str | Path, out_dir: str | Path, cfg: TrainCoarseConfig = TrainCoarseConfig(),
                 holdout: str | Path | None = None) -> Path:
    """Train (or resume) CoarseNet in out_dir until cfg.loop.max_steps; returns the last checkpoint's path."""
    cfg, speech_dim, device = prepare(manifest, cfg)
    return run_stage(manifest, out_dir, cfg, make_objective(cfg, speech_dim), holdout, device)
