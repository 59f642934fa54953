"""Typed training configs: frozen pydantic trees loaded from YAML (shipped: posetalk_models/train/configs/*.yaml)
with dotted CLI overrides.

The same rules as the data pipeline's config (posetalk_data.config): an unknown key or a wrong type is an error
naming the key and the file before any work starts; `--set a.b=c` values are read as YAML.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from posetalk_data.config import ConfigError, Section, read_tree, validate

from posetalk_models.nets.coarsenet import CoarseNetConfig
from posetalk_models.data.windows import DataConfig
from posetalk_models.nets.enhancer import EnhancerConfig
from posetalk_models.data.frames import FrameConfig
from posetalk_models.nets.layers import MotionConfig
from posetalk_models.nets.pld import PLDConfig
from posetalk_models.nets.refinenet import RefineNetConfig
from posetalk_models.nets.syncnet import SyncExpertConfig
from posetalk_models.nets.vae import PoseVAEConfig


class LoopConfig(Section):
    """What every trainer shares: optimiser, length, checkpoints, logging, device."""
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    max_steps: int = Field(200, ge=1)
    warmup_steps: int = Field(20, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ckpt_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
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
    holdout_batches: int = Field(4, ge=1)   # batches of the --holdout manifest for the reconstruction error in degrees


class TrainPLDConfig(Section):
    # window, speech and text stems must match the VAE run and the shards; feature sizes are read from the data
    model: PLDConfig = PLDConfig()
    data: DataConfig = DataConfig(window=16)   # speech/text "auto": the features the manifest has
    loop: LoopConfig = LoopConfig(lr=3e-4, max_steps=300, warmup_steps=30)
    latent_stat_batches: int = Field(8, ge=1)  # batches of VAE posterior means for the latent normalisation


class VideoLossConfig(Section):
    """Weights of the video generator's loss terms (0 switches a term off)."""
    l1: float = Field(1.0, ge=0)            # pyramid L1 (4 scales)
    ssim: float = Field(0.2, ge=0)          # 1 - SSIM
    perceptual: float = Field(0.0, ge=0)    # VGG19 pyramid; needs VGG19 weights (vgg_weights)
    vgg_weights: str | None = None          # a local vgg19-dcbb9e9d.pth; None: the torch hub cache; "random": tests
    warp: float = Field(1.0, ge=0)          # CoarseNet: the warped image's own pyramid L1, so the flow moves the head
    lip: float = Field(0.0, ge=0)           # extra L1 weight inside the lip mask (RefineNet)
    lower_face: float = Field(0.0, ge=0)    # extra L1 weight below the nose (RefineNet)
    sync: float = Field(0.0, ge=0)          # RefineNet: the lip-sync expert's loss (needs --sync RUN)
    gan: float = Field(0.0, ge=0)           # enhancer: LSGAN weight; > 0 trains a patch discriminator
    feature_matching: float = Field(10.0, ge=0)   # with gan: L1 between discriminator features


class VideoTrainConfig(Section):
    """What the three generator trainers share; each subclass sets its own tiny (64 px, CPU) defaults."""
    data: FrameConfig = FrameConfig(size=64)
    loss: VideoLossConfig = VideoLossConfig()
    loop: LoopConfig = LoopConfig(lr=5e-4, max_steps=200, warmup_steps=10, batch_size=8)
    holdout_batches: int = Field(4, ge=1)   # batches of the --holdout manifest for the held-out figures

    @model_validator(mode="after")
    def _sizes_agree(self):
        if self.data.size != self.model.size:
            raise ValueError(f"data.size {self.data.size} differs from model.size {self.model.size}: set both")
        return self


TINY_MOTION = MotionConfig(hidden=32, latent=32)


class TrainCoarseConfig(VideoTrainConfig):
    model: CoarseNetConfig = CoarseNetConfig(size=64, base=8, max_channels=64, levels=3, flow_down=2,
                                             motion=TINY_MOTION)
    warp_only_steps: int = Field(50, ge=0)  # the warp alone first (PIRender); then the editing net joins


class TrainRefineConfig(VideoTrainConfig):
    model: RefineNetConfig = RefineNetConfig(size=64, base=8, max_channels=64, motion=MotionConfig(hidden=48,
                                                                                                    latent=48))
    loss: VideoLossConfig = VideoLossConfig(lip=10.0, lower_face=2.0)


class TrainEnhanceConfig(VideoTrainConfig):
    model: EnhancerConfig = EnhancerConfig(size=64, base=8, max_channels=32, levels=2, disc_base=16)


class TrainSyncConfig(Section):
    model: SyncExpertConfig = SyncExpertConfig(mouth_size=(16, 32), base=8, embed=64)
    data: FrameConfig = FrameConfig(size=64, mouth_size=(16, 32), samples_per_clip=8)
    loop: LoopConfig = LoopConfig(lr=1e-3, max_steps=300, warmup_steps=10, batch_size=16)
    holdout_batches: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _shapes_agree(self):
        if (self.data.mouth_size, self.data.sync_frames) != (self.model.mouth_size, self.model.frames):
            raise ValueError("data.mouth_size and data.sync_frames must equal model.mouth_size and model.frames")
        return self


KINDS = {"vae": TrainVAEConfig, "pld": TrainPLDConfig, "coarse": TrainCoarseConfig, "refine": TrainRefineConfig,
         "enhance": TrainEnhanceConfig, "sync": TrainSyncConfig}


SHIPPED = {"vae": "pose-vae", "pld": "pose-pld", "coarse": "video-coarse", "refine": "video-refine",
           "enhance": "video-enhance", "sync": "video-sync"}   # kind -> its YAML in CONFIGS
CONFIGS = Path(__file__).with_name("configs")     # package data: an installed wheel has them


def shipped(kind: str) -> Path:
    """The shipped training YAML of a model kind (at the size for real data)."""
    return CONFIGS / f"{SHIPPED[kind]}.yaml"


def load_train_config(kind: str, path: str | Path | None = None, overrides: list[str] = ()):
    """YAML (or the defaults), then `key.path=value` overrides; returns the kind's Train*Config."""
    if kind not in KINDS:
        raise ConfigError(f"unknown model {kind!r}; choose one of {', '.join(KINDS)}")
    origin = str(path) if path else f"{kind} defaults"
    return validate(KINDS[kind], read_tree(path, "training config"), overrides, origin)
