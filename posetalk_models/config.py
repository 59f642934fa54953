"""Typed training configs: frozen pydantic trees loaded from pipelines/pose-*.yaml with dotted CLI overrides.

The same rules as the data pipeline's config (posetalk_data.config): an unknown key or a wrong type is an error
naming the key and the file before any work starts; `--set a.b=c` values are read as YAML.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from posetalk_data.config import ConfigError, Section, read_tree, validate

from .data import DataConfig
from .pld import PLDConfig
from .vae import PoseVAEConfig


class LoopConfig(Section):
    """What every trainer shares: optimiser, length, checkpoints, logging, device."""
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_steps: int = 200
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ckpt_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"          # auto: cuda if available, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"   # auto: bf16/fp16 autocast on cuda, fp32 on cpu
    progress: bool = True
    tensorboard: bool = True      # also log to OUT/tensorboard when the tensorboard package is installed


class TrainVAEConfig(Section):
    # tiny defaults: a CPU run of max_steps finishes in well under a minute
    model: PoseVAEConfig = PoseVAEConfig(d_model=64, enc_layers=2, dec_layers=2, latent_dim=16, dropout=0.0)
    data: DataConfig = DataConfig(window=16, speech=None, text=None)   # the VAE needs motion only
    loop: LoopConfig = LoopConfig()
    holdout_batches: int = 4      # batches of the --holdout manifest for the reconstruction error in degrees


class TrainPLDConfig(Section):
    # window, speech and text stems must match the VAE run and the shards; feature sizes are read from the data
    model: PLDConfig = PLDConfig()
    data: DataConfig = DataConfig(window=16)   # speech/text "auto": the features the manifest has
    loop: LoopConfig = LoopConfig(lr=3e-4, max_steps=300, warmup_steps=30)
    latent_stat_batches: int = 8  # batches of VAE posterior means for the latent normalisation


KINDS = {"vae": TrainVAEConfig, "pld": TrainPLDConfig}


def load_train_config(kind: str, path: str | Path | None = None, overrides: list[str] = ()):
    """YAML (or the defaults), then `key.path=value` overrides; returns TrainVAEConfig or TrainPLDConfig."""
    if kind not in KINDS:
        raise ConfigError(f"unknown model {kind!r}; choose {' or '.join(KINDS)}")
    origin = str(path) if path else f"{kind} defaults"
    return validate(KINDS[kind], read_tree(path, "training config"), overrides, origin)
