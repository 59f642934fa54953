"""Enhancer training over the frozen CoarseNet and RefineNet, optionally with a GAN.

  posetalk-train enhance --manifest M --refine RUN2 --out RUN3 [--holdout H]
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from posetalk_models.nets.cascade import Cascade
from posetalk_models.nets.enhancer import Enhancer, PatchDiscriminator
from posetalk_models.train.config import TrainEnhanceConfig, VideoLossConfig
from posetalk_models.train.losses import feature_matching, lsgan_discriminator, lsgan_generator
from posetalk_models.train.video_objective import (VideoObjective, frozen_stages, prepare, run_stage, shares,
                                                   stage_net)


class EnhanceObjective(VideoObjective):
    """Over the frozen CoarseNet and RefineNet: the enhanced frame's terms, plus LSGAN and feature matching against
    a patch discriminator when `loss.gan` > 0 (the loop trains the discriminator: `discriminator_loss`)."""

    stage = "enhance"

    def __init__(self, model: Enhancer, frozen: Cascade, loss: VideoLossConfig):
        super().__init__(model, frozen, loss)
        self.discriminator = PatchDiscriminator(model.cfg.disc_base) if loss.gan > 0 else None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = self.inputs(batch)
        before = self.before(x)
        enhanced = self.generate(x, before)
        image = self.image_loss(enhanced, x["target"])
        loss = image.pop("total")
        figures = shares({"copy": x["source"], "refine": before["refine"], "enhance": enhanced}, x["target"],
                         x["lips"])
        if self.discriminator is not None:
            fake_scores, fake_feats = self.discriminator(enhanced)
            with torch.no_grad():
                _, real_feats = self.discriminator(x["target"])
            gan, fm = lsgan_generator(fake_scores), feature_matching(real_feats, fake_feats)
            loss = loss + self.loss_cfg.gan * gan + self.loss_cfg.feature_matching * fm
            figures.update(gan=gan.detach(), feature_matching=fm.detach())
            self._last = (x["target"], enhanced.detach())
        return {"loss": loss, **image, **figures}

    def discriminator_loss(self, batch: dict, disc: nn.Module) -> dict[str, torch.Tensor]:
        real, fake = self._last
        scores = disc(torch.cat([real, fake]))[0]          # one forward (DDP), real then fake
        return {"loss": lsgan_discriminator(*scores.chunk(2))}


def make_objective(cfg: TrainEnhanceConfig, speech_dim: int, frozen: Cascade) -> EnhanceObjective:
    """A fresh enhancer's objective over the frozen CoarseNet and RefineNet (a Cascade). The enhancer reads no
    speech: speech_dim is there so every video family is made alike."""
    return EnhanceObjective(stage_net("enhance", cfg, speech_dim), frozen, cfg.loss)


def train_enhance(manifest: str | Path, out_dir: str | Path, cfg: TrainEnhanceConfig = TrainEnhanceConfig(),
                  refine_run: str | Path | None = None, holdout: str | Path | None = None) -> Path:
    """Train (or resume) the enhancer over a frozen refine run's CoarseNet and RefineNet (copied into out_dir)."""
    cfg, speech_dim, device = prepare(manifest, cfg)
    frozen = frozen_stages(out_dir, "enhance", refine_run, "--refine", cfg.data, device)
    return run_stage(manifest, out_dir, cfg, make_objective(cfg, speech_dim, frozen), holdout, device)
