"""What the video generator's three trainers (train/coarse.py, refine.py, enhance.py) share: the objective's base
(the frozen stages before the one trained, its inputs, its frame), the stage's net sized to the data, the frozen
stages a run builds on, the held-out figures and the run itself through the shared loop.

Every objective logs, next to its loss terms, `lip_share` of each stage's output (the lips' share of the per-pixel
L1 error: PoseTalk's "< 4 %" claim, measured), and the held-out figures on --holdout compare each stage with the
copy-source baseline (the source frame shown unchanged): L1, PSNR, SSIM and L1 inside the lips.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn

from posetalk_data.reading import load_manifest

from posetalk_models.checkpoints import copy_stage, run_record
from posetalk_models.data.frames import FrameConfig, frame_loader, resolve_speech, speech_dim
from posetalk_models.data.windows import feature_versions
from posetalk_models.nets.cascade import BY_NAME, MODELS, STAGES, Cascade, StageInputs, batch_inputs
from posetalk_models.runs import KINDS
from posetalk_models.train.config import VideoLossConfig, VideoTrainConfig
from posetalk_models.train.losses import ImageLoss, lip_share, masked_l1, psnr, ssim
from posetalk_models.train.loop import manifest_batches, pick_device, train


def shares(images: dict[str, torch.Tensor], target: torch.Tensor, lips: torch.Tensor) -> dict[str, torch.Tensor]:
    """lip_share of every stage's output, and of the copy-source baseline."""
    return {f"lip_share_{name}": lip_share(image.detach(), target, lips) for name, image in images.items()}


class VideoObjective(nn.Module):
    """A stage's objective: the frozen stages before it (`frozen`, a Cascade), the stage being trained (`model`),
    its losses. `outputs(batch)` gives every stage's frame (and the copy-source baseline) for held-out figures."""

    stage: str

    def __init__(self, model: nn.Module, frozen: Cascade | None, loss: VideoLossConfig):
        super().__init__()
        before = list(STAGES[:STAGES.index(self.stage)])
        if (frozen.present if frozen is not None else []) != before:
            raise ValueError(f"the {self.stage} stage is trained over {' and '.join(before) or 'no frozen stage'}")
        self.model, self.frozen, self.loss_cfg = model, frozen, loss
        self.image_loss = ImageLoss(loss)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen is not None:
            self.frozen.eval()
        return self

    def inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        source, target, motion, speech, source_pose = batch_inputs(batch)
        return {"source": source, "target": target, "motion": motion, "speech": speech, "source_pose": source_pose,
                "lips": batch["lip_mask"].flatten(0, 1), "lower": batch["lower_mask"].flatten(0, 1)}

    def before(self, x: dict) -> dict[str, torch.Tensor]:
        """Frames of the frozen stages (no gradients)."""
        if self.frozen is None:
            return {}
        with torch.no_grad():
            return self.frozen(x["source"], x["motion"], x["source_pose"], x["speech"])

    def generate(self, x: dict, before: dict) -> torch.Tensor:
        """The trained stage's frame from the last frozen stage's (the source frame for the first stage), as the
        cascade applies it (nets.cascade.CASCADE)."""
        last = before[self.frozen.last] if self.frozen is not None else x["source"]
        inputs = StageInputs(x["source"], x["motion"], x["source_pose"], x["speech"])
        return BY_NAME[self.stage].apply(self.model, last, inputs)

    @torch.no_grad()
    def outputs(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(inputs, {"copy": source, <stage>: frame, ...}) for one batch, in eval mode."""
        x = self.inputs(batch)
        before = self.before(x)
        return x, {"copy": x["source"], **before, self.stage: self.generate(x, before)}


# ------------------------------------------------------------------ the stage's net
def with_speech(model_cfg, data: FrameConfig, speech_dim: int):
    """The model config with the motion encoder sized to the data's speech features (or without speech); a config
    without a motion encoder (the enhancer's) as it is."""
    if not hasattr(model_cfg, "motion"):
        return model_cfg
    motion = model_cfg.motion.model_copy(update={"speech": data.speech is not None,
                                                 "speech_dim": speech_dim or model_cfg.motion.speech_dim})
    return model_cfg.model_copy(update={"motion": motion})


def stage_net(stage: str, cfg: VideoTrainConfig, speech_dim: int) -> nn.Module:
    """A fresh net of `stage` from its training config (cfg.data resolved: data.speech is the manifest's)."""
    net, _ = MODELS[stage]
    return net(with_speech(cfg.model, cfg.data, speech_dim))


# ------------------------------------------------------------------ what a run builds on
def frozen_stages(out_dir: Path, stage: str, from_run, flag: str, data: FrameConfig, device) -> Cascade:
    """The frozen stages before `stage` (copied into out_dir from `from_run`, or the copies already there when a
    run resumes), checked against the data this run trains on."""
    nets, sidecar = {}, None
    for name in STAGES[:STAGES.index(stage)]:
        nets[name], sidecar = copy_stage(Path(out_dir), name, from_run, build=KINDS[name].build, flag=flag,
                                         device=device)
    check_frozen(stage, data, sidecar, MODELS[name][0].__name__)
    return Cascade(**nets).to(device).eval()


def check_frozen(stage: str, data: FrameConfig, frozen_sidecar: dict, name: str) -> None:
    """A stage must see the data its frozen predecessors were trained on: the same size and speech features."""
    before = frozen_sidecar["config"]["data"]
    for key in ("size", "speech", "motion_window", "audio_window"):
        if before[key] != getattr(data, key):
            raise ValueError(f"data.{key} = {getattr(data, key)!r} but the {name} this {stage} run builds on was "
                             f"trained with {before[key]!r}")


# ------------------------------------------------------------------ held-out figures
@torch.no_grad()
def holdout_figures(objective: VideoObjective, manifest: str | Path, data: FrameConfig, batches: int,
                    batch_size: int, device) -> dict[str, float]:
    """Per output (copy-source baseline and each stage): L1, PSNR, SSIM, L1 inside the lips and lip_share, over the
    first `batches` batches of one pass over a held-out manifest (the same frames at every checkpoint)."""
    was = objective.training
    objective.eval()
    held = data.model_copy(update={"resample": False, "seed": 0})
    sums, n = {}, 0
    for batch in itertools.islice(frame_loader(manifest, held, batch_size=batch_size, every_rank=True), batches):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        x, frames = objective.outputs(batch)
        for name, image in frames.items():
            image = image.clamp(-1, 1)
            for figure, value in (("l1", (image - x["target"]).abs().mean()), ("psnr", psnr(image, x["target"]).mean()),
                                  ("ssim", ssim(image, x["target"])), ("lip_l1", masked_l1(image, x["target"],
                                                                                          x["lips"])),
                                  ("lip_share", lip_share(image, x["target"], x["lips"]))):
                key = f"holdout_{name}_{figure}"
                sums[key] = sums.get(key, 0.0) + float(value)
        n += 1
    objective.train(was)
    return {k: round(v / max(n, 1), 5) for k, v in sums.items()}


# ------------------------------------------------------------------ a run
def prepare(manifest: str | Path, cfg: VideoTrainConfig) -> tuple[VideoTrainConfig, int, torch.device]:
    """What every video trainer starts with: the seed set, the config with the manifest's speech features
    resolved (data.speech "auto"), their size and the device."""
    torch.manual_seed(cfg.loop.seed)
    data = resolve_speech(manifest, cfg.data)
    return cfg.model_copy(update={"data": data}), speech_dim(manifest, data), pick_device(cfg.loop.device)


def run_stage(manifest, out_dir, cfg: VideoTrainConfig, objective: VideoObjective, holdout, device) -> Path:
    """Train the objective's stage in out_dir through the shared loop (cfg.data resolved by `prepare`)."""
    stage, data = objective.stage, cfg.data
    sidecar = {**run_record(stage, cfg.model_copy(update={"model": objective.model.cfg}), manifest),
               "features": feature_versions(manifest, data.speech, None),
               "pipeline": load_manifest(manifest).get("pipeline")}   # how the faces were cropped: generation does so
    evaluate = (lambda: holdout_figures(objective, holdout, data, cfg.holdout_batches, cfg.loop.batch_size,
                                        device)) if holdout else None
    return train(stage, out_dir, objective.to(device), manifest_batches(manifest, data, cfg.loop, frame_loader),
                 cfg.loop, sidecar, evaluate=evaluate, device=device)
