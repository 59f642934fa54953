"""Training of the project's lip-sync expert (posetalk_models.nets.syncnet) from the same shards, through the shared loop.

  posetalk-train sync --manifest M --out RUN [--holdout H]

Held-out figures: accuracy on in-sync / off-sync windows, and the mean in-sync probability of real footage.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn

from posetalk_models.train.config import TrainSyncConfig
from posetalk_models.data.windows import feature_versions
from posetalk_models.data.frames import FrameConfig, frame_loader, frame_stream, resolve_speech, speech_dim
from posetalk_models.nets.layers import to_unit
from posetalk_models.nets.syncnet import SyncExpert
from posetalk_models.checkpoints import run_record
from posetalk_models.train.loop import manifest_batches, pick_device, train


class SyncObjective(nn.Module):
    def __init__(self, model: SyncExpert):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model.loss(to_unit(batch["mouth"]), batch["speech"], batch["label"])


def make_objective(cfg: TrainSyncConfig, speech_dim: int) -> SyncObjective:
    """A fresh lip-sync expert's objective, its speech input sized to the data's features (speech_dim)."""
    return SyncObjective(SyncExpert(cfg.model.model_copy(update={"speech_dim": speech_dim})))


@torch.no_grad()
def sync_holdout(model: SyncExpert, manifest: str | Path, data: FrameConfig, batches: int, batch_size: int,
                 device) -> dict[str, float]:
    was = model.training
    model.eval()
    held = data.model_copy(update={"resample": False, "seed": 0})
    right, total, p_sync = 0.0, 0, []
    for batch in itertools.islice(frame_loader(manifest, held, batch_size=batch_size, kind="sync", every_rank=True),
                                  batches):
        logit = model(to_unit(batch["mouth"].to(device)), batch["speech"].to(device))
        label = batch["label"].to(device)
        right += float(((logit > 0).float() == label).sum())
        total += len(label)
        p_sync.append(torch.sigmoid(logit[label == 1]))
    model.train(was)
    p = torch.cat(p_sync) if p_sync else torch.zeros(0)
    return {"holdout_accuracy": round(right / max(total, 1), 4),
            "holdout_p_sync_real": round(float(p.mean()) if len(p) else float("nan"), 4)}


def train_sync(manifest: str | Path, out_dir: str | Path, cfg: TrainSyncConfig = TrainSyncConfig(),
               holdout: str | Path | None = None) -> Path:
    """Train (or resume) the lip-sync expert in out_dir until cfg.loop.max_steps."""
    torch.manual_seed(cfg.loop.seed)
    device = pick_device(cfg.loop.device)
    data = resolve_speech(manifest, cfg.data)
    if data.speech is None:
        raise ValueError("the lip-sync expert needs speech features: set data.speech (or auto)")
    objective = make_objective(cfg, speech_dim(manifest, data)).to(device)
    model = objective.model
    sidecar = {**run_record("sync", cfg.model_copy(update={"data": data, "model": model.cfg}), manifest),
               "features": feature_versions(manifest, data.speech, None)}

    if holdout:     # refused now (no clip long enough, a shard cut short), not at the first checkpoint
        frame_stream(holdout, data.model_copy(update={"resample": False}), kind="sync", every_rank=True)
    evaluate = (lambda: sync_holdout(model, holdout, data, cfg.holdout_batches, cfg.loop.batch_size, device)) \
        if holdout else None
    return train("lip-sync expert", out_dir, objective,
                 manifest_batches(manifest, data, cfg.loop, frame_loader, kind="sync"), cfg.loop, sidecar,
                 evaluate=evaluate, device=device)
