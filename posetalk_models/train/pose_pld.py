"""Pose Latent Diffusion training in the latent space of a trained, frozen pose VAE.

A PLD run folder is self-contained for generation: the VAE's weights and sidecar are copied in (vae.safetensors,
vae.json) when the run starts, and every checkpoint's sidecar records the pose statistics, the latent sizes and
the exact speech and text feature versions of the training manifest, which generation must reproduce.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn


from posetalk_models.train.config import TrainPLDConfig
from posetalk_models.data.windows import feature_versions, normalise, resolve_features
from posetalk_models.nets.pld import PoseLatentDiffusion
from posetalk_models.checkpoints import copy_stage, last_checkpoint, run_record
from posetalk_models.train.loop import manifest_batches, pick_device, train
from posetalk_models.nets.vae import PoseVAE
from posetalk_models.runs import KINDS


class PLDObjective(nn.Module):
    """Encodes pose windows with the frozen VAE (posterior mean), then the diffusion loss on those latents."""

    def __init__(self, model: PoseLatentDiffusion, vae: PoseVAE, stats: dict):
        super().__init__()
        self.model, self.vae, self.stats = model, vae.requires_grad_(False), stats

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()   # frozen: always the posterior mean, no dropout
        return self

    @torch.no_grad()
    def latents(self, batch: dict) -> torch.Tensor:
        return self.vae.encode(normalise(batch["pose"], self.stats), batch["length"])[0].float()

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model(self.latents(batch), batch.get("text"), batch.get("speech"))


def _vae_of_run(run_dir: Path, vae_run: str | Path | None, device) -> tuple[PoseVAE, dict]:
    """The run's own VAE copy when resuming; otherwise the named VAE run's last checkpoint, copied in."""
    return copy_stage(run_dir, "vae", vae_run, build=KINDS["vae"].build, flag="--vae", device=device)


def check_vae_fits(cfg: TrainPLDConfig, vae_sidecar: dict) -> None:
    vae_data = vae_sidecar["config"]["data"]
    for key in ("window", "translation"):
        if vae_data[key] != getattr(cfg.data, key):
            raise ValueError(f"data.{key} = {getattr(cfg.data, key)} but the VAE was trained with {vae_data[key]}")
    if cfg.data.speech is None and cfg.data.text is None:
        raise ValueError("PLD needs a condition: set data.speech and/or data.text")


def latent_sample(objective: PLDObjective, batches, n_batches: int, device) -> torch.Tensor:
    """VAE posterior means (n, L, Z) of up to n_batches batches (fewer when an epoch is shorter)."""
    return torch.cat([objective.latents({k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)})
                      for batch in itertools.islice(batches, n_batches)])


MEASURED = ("latent_tokens", "latent_dim", "window", "speech_dim", "text_dim")   # model sizes read from the VAE/data


def measured_sizes(cfg: TrainPLDConfig, vae: PoseVAE, batch: dict) -> dict[str, int]:
    """The PLD's sizes (MEASURED) a new run reads from its VAE and a first batch of its data."""
    return {"latent_tokens": vae.cfg.latent_tokens, "latent_dim": vae.cfg.latent_dim, "window": cfg.data.window,
            "speech_dim": batch["speech"].shape[-1] if "speech" in batch else cfg.model.speech_dim,
            "text_dim": batch["text"].shape[-1] if "text" in batch else cfg.model.text_dim}


def make_objective(cfg: TrainPLDConfig, vae: PoseVAE, stats: dict, sizes: dict) -> PLDObjective:
    """A fresh PLD's objective in the frozen `vae`'s latent space (`stats`: the VAE's normalisation). sizes: the
    MEASURED model sizes (measured_sizes for a new run, the checkpoint's for a resumed one)."""
    model_cfg = cfg.model.model_copy(update={k: sizes[k] for k in MEASURED})
    return PLDObjective(PoseLatentDiffusion(model_cfg), vae, stats)


def train_pld(manifest: str | Path, out_dir: str | Path, cfg: TrainPLDConfig = TrainPLDConfig(),
              vae_run: str | Path | None = None) -> Path:
    """Train (or resume) a PLD run in out_dir until cfg.loop.max_steps; returns the last checkpoint's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.loop.seed)
    device = pick_device(cfg.loop.device)
    cfg = cfg.model_copy(update={"data": resolve_features(manifest, cfg.data)})
    vae, vae_sidecar = _vae_of_run(out_dir, vae_run, device)
    check_vae_fits(cfg, vae_sidecar)
    stats = vae_sidecar["stats"]   # the VAE's normalisation: the latents mean what the VAE learnt
    batches = manifest_batches(manifest, cfg.data, cfg.loop)
    _, saved = last_checkpoint(out_dir)
    if saved:   # the sizes measured when the run started; anything asked for now must agree (check_resume)
        sizes = saved["config"]["model"]
    else:
        stream = batches(0)   # feature sizes from the first batch, latent statistics from it and the next ones
        first = next(stream)
        sizes = measured_sizes(cfg, vae, first)
    objective = make_objective(cfg, vae, stats, sizes).to(device)
    model = objective.model
    if not saved:   # resumed runs load the latent statistics with the weights (they are buffers)
        model.set_latent_stats(latent_sample(objective, itertools.chain([first], stream), cfg.latent_stat_batches,
                                             device))
    sidecar = {**run_record("pld", cfg.model_copy(update={"model": model.cfg}), manifest), "stats": stats,
               "features": feature_versions(manifest, cfg.data.speech, cfg.data.text),
               "vae": {"copied_from": vae_sidecar.get("copied_from"), "step": vae_sidecar.get("step")}}
    return train("pose latent diffusion", out_dir, objective, batches, cfg.loop, sidecar, device=device)
