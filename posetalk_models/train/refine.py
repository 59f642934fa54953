"""RefineNet training over a frozen CoarseNet: finer lip motion, the L1 weighted up on the lips, optionally the
lip-sync expert's judgement.

  posetalk-train refine --manifest M --coarse RUN --out RUN2 [--sync SYNC_RUN] [--holdout H]
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from posetalk_models.checkpoints import copy_stage
from posetalk_models.data.frames import crop_mouths
from posetalk_models.nets.cascade import Cascade
from posetalk_models.nets.syncnet import SyncExpert
from posetalk_models.runs import KINDS
from posetalk_models.train.config import TrainRefineConfig, VideoLossConfig
from posetalk_models.train.losses import masked_l1
from posetalk_models.train.video_objective import (VideoObjective, frozen_stages, prepare, run_stage, shares,
                                                   stage_net)


class RefineObjective(VideoObjective):
    """Over the frozen CoarseNet: the refined frame's terms with the L1 weighted up inside the lips (`loss.lip`) and
    below the nose (`loss.lower_face`), and optionally the frozen lip-sync expert's judgement (`loss.sync`)."""

    stage = "refine"

    def __init__(self, model, frozen: Cascade, loss: VideoLossConfig, expert: SyncExpert | None = None):
        super().__init__(model, frozen, loss)
        self.expert = expert.eval().requires_grad_(False) if expert is not None else None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = self.inputs(batch)
        before = self.before(x)
        refined = self.generate(x, before)
        weight = 1 + self.loss_cfg.lip * x["lips"] + self.loss_cfg.lower_face * x["lower"]
        image = self.image_loss(refined, x["target"], weight)
        loss = image.pop("total")
        figures = {"lip_l1": masked_l1(refined.detach(), x["target"], x["lips"]),
                   **shares({"copy": x["source"], "coarse": before["coarse"], "refine": refined}, x["target"],
                            x["lips"])}
        if self.expert is not None and self.loss_cfg.sync:
            sync = self.sync_loss(refined, batch)
            loss = loss + self.loss_cfg.sync * sync
            figures["sync"] = sync.detach()
        return {"loss": loss, **image, **figures}

    def sync_loss(self, frames: torch.Tensor, batch: dict) -> torch.Tensor:
        """-log p(in sync) of each item's T generated frames with their own speech, by the frozen expert."""
        b, t = batch["target"].shape[:2]
        if t != self.expert.cfg.frames:
            raise ValueError(f"the sync loss needs data.targets = {self.expert.cfg.frames} (the expert's frames)")
        mouths = crop_mouths(frames, batch["mouth_box"].flatten(0, 1), self.expert.cfg.mouth_size)
        mouths = mouths.reshape(b, t * 3, *self.expert.cfg.mouth_size)            # (b, 3T, h, w)
        logit = self.expert(mouths, batch["sync_speech"])
        return nn.functional.softplus(-logit).mean()                               # BCE against "in sync"


def make_objective(cfg: TrainRefineConfig, speech_dim: int, frozen: Cascade,
                   expert: SyncExpert | None = None) -> RefineObjective:
    """A fresh RefineNet's objective over the frozen CoarseNet (a Cascade), with the lip-sync expert for
    loss.sync > 0 (cfg.data resolved; speech_dim: the manifest's speech feature size)."""
    return RefineObjective(stage_net("refine", cfg, speech_dim), frozen, cfg.loss, expert)


def sync_expert(out_dir: Path, sync_run, cfg: TrainRefineConfig, device) -> SyncExpert | None:
    """The frozen lip-sync expert a run with loss.sync > 0 uses (copied into out_dir); None without the term."""
    if cfg.loss.sync <= 0:
        return None
    expert, _ = copy_stage(Path(out_dir), "sync", sync_run, build=KINDS["sync"].build, flag="--sync", device=device)
    return expert


def train_refine(manifest: str | Path, out_dir: str | Path, cfg: TrainRefineConfig = TrainRefineConfig(),
                 coarse_run: str | Path | None = None, holdout: str | Path | None = None,
                 sync_run: str | Path | None = None) -> Path:
    """Train (or resume) RefineNet over a frozen CoarseNet run (copied into out_dir)."""
    cfg, speech_dim, device = prepare(manifest, cfg)
    frozen = frozen_stages(out_dir, "refine", coarse_run, "--coarse", cfg.data, device)
    objective = make_objective(cfg, speech_dim, frozen, sync_expert(out_dir, sync_run, cfg, device))
    return run_stage(manifest, out_dir, cfg, objective, holdout, device)
