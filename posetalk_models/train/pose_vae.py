"""Pose VAE training: normalisation statistics from the training manifest, the Huber + KL objective, and the
reconstruction error in degrees on held-out clips at every checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from posetalk_models.train.config import TrainVAEConfig
from posetalk_models.data.windows import loader, normalise, pose_stats
from posetalk_models.evaluate.pose import recon_error_deg
from posetalk_models.checkpoints import check_resume, last_checkpoint, run_record
from posetalk_models.train.loop import manifest_batches, pick_device, train
from posetalk_models.nets.vae import PoseVAE


class VAEObjective(nn.Module):
    def __init__(self, model: PoseVAE, stats: dict):
        super().__init__()
        self.model, self.stats = model, stats

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model.loss(normalise(batch["pose"], self.stats), batch["length"])


def make_objective(cfg: TrainVAEConfig, stats: dict) -> VAEObjective:
    """A fresh pose VAE's objective over windows normalised by `stats` (pose_stats of the training manifest)."""
    if len(stats["mean"]) != cfg.model.channels:
        raise ValueError(f"model has {cfg.model.channels} channels, the data {len(stats['mean'])}")
    return VAEObjective(PoseVAE(cfg.model), stats)


def holdout_error(model: PoseVAE, manifest: str | Path, cfg: TrainVAEConfig, stats: dict) -> dict[str, float]:
    """Reconstruction error in degrees over the first `holdout_batches` batches of one pass over a manifest."""
    data = cfg.data.model_copy(update={"resample": False, "seed": 0})
    sums, n = {}, 0
    for _, batch in zip(range(cfg.holdout_batches), loader(manifest, data, batch_size=cfg.loop.batch_size,
                                                                    every_rank=True)):
        for key, value in recon_error_deg(model, batch, stats).items():
            sums[key] = sums.get(key, 0.0) + value
        n += 1
    return {f"holdout_{k}": round(v / max(n, 1), 4) for k, v in sums.items()}


def train_vae(manifest: str | Path, out_dir: str | Path, cfg: TrainVAEConfig = TrainVAEConfig(),
              holdout: str | Path | None = None) -> Path:
    """Train (or resume) in out_dir until cfg.loop.max_steps; returns the last checkpoint's path."""
    out_dir = Path(out_dir)
    record = run_record("vae", cfg, manifest)
    check_resume(out_dir, record)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.loop.seed)
    device = pick_device(cfg.loop.device)
    _, saved = last_checkpoint(out_dir)
    stats = saved["stats"] if saved else pose_stats(manifest, window=cfg.data.window,
                                                    translation=cfg.data.translation)
    objective = make_objective(cfg, stats).to(device)

    evaluate = (lambda: holdout_error(objective.model, holdout, cfg, stats)) if holdout else None
    sidecar = {**record, "stats": stats}
    return train("pose VAE", out_dir, objective, manifest_batches(manifest, cfg.data, cfg.loop),
                 cfg.loop, sidecar, evaluate=evaluate, device=device)
