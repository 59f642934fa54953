"""Training of the video generator's three stages, each over the frozen ones before it, through the shared loop.

  posetalk-train coarse  --manifest M --out RUN                 CoarseNet: source -> target pose, gaze, coarse mouth
  posetalk-train refine  --manifest M --coarse RUN --out RUN2   RefineNet over the frozen CoarseNet: lips
  posetalk-train enhance --manifest M --refine RUN2 --out RUN3  the enhancer over both (optionally with a GAN)

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

from posetalk_models.train.config import TrainCoarseConfig, TrainEnhanceConfig, TrainRefineConfig, VideoLossConfig, VideoTrainConfig
from posetalk_models.data.windows import feature_versions
from posetalk_models.nets.enhancer import Enhancer, PatchDiscriminator
from posetalk_models.data.frames import FrameConfig, crop_mouths, frame_loader, resolve_speech, speech_dim
from posetalk_models.nets.cascade import Cascade, batch_inputs, build_stage
from posetalk_models.runs import KINDS
from posetalk_models.train.losses import (Perceptual, feature_matching, lip_share, lsgan_discriminator, lsgan_generator, masked_l1, psnr,
                     pyramid_l1, ssim)
from posetalk_models.nets.syncnet import SyncExpert
from posetalk_models.checkpoints import copy_stage, run_record
from posetalk_models.train.loop import manifest_batches, pick_device, train


# ------------------------------------------------------------------ the loss terms every stage shares
class ImageLoss(nn.Module):
    """Weighted pyramid L1 (per-pixel weights optional), 1 - SSIM and the VGG perceptual term of one output."""

    def __init__(self, cfg: VideoLossConfig):
        super().__init__()
        self.cfg = cfg
        self.perceptual = Perceptual(cfg.vgg_weights) if cfg.perceptual > 0 else None

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, prefix: str = ""
                ) -> dict[str, torch.Tensor]:
        terms = {"l1": pyramid_l1(pred, target, weight)}
        if self.cfg.ssim:
            terms["ssim"] = 1 - ssim(pred, target)
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(pred, target)
        total = self.cfg.l1 * terms["l1"] + self.cfg.ssim * terms.get("ssim", 0) \
            + self.cfg.perceptual * terms.get("perceptual", 0)
        return {"total": total, **{f"{prefix}{k}": v.detach() for k, v in terms.items()}}


def shares(images: dict[str, torch.Tensor], target: torch.Tensor, lips: torch.Tensor) -> dict[str, torch.Tensor]:
    """lip_share of every stage's output, and of the copy-source baseline."""
    return {f"lip_share_{name}": lip_share(image.detach(), target, lips) for name, image in images.items()}


class VideoObjective(nn.Module):
    """A stage's objective: the frozen stages before it (`frozen`, a Cascade), the stage being trained (`model`),
    its losses. `outputs(batch)` gives every stage's frame (and the copy-source baseline) for held-out figures."""

    stage: str

    def __init__(self, model: nn.Module, frozen: Cascade | None, loss: VideoLossConfig):
        super().__init__()
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

    @torch.no_grad()
    def outputs(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(inputs, {"copy": source, <stage>: frame, ...}) for one batch, in eval mode."""
        x = self.inputs(batch)
        frames = {"copy": x["source"], **self.before(x), self.stage: self.generate(x, self.before(x))}
        return x, frames


class CoarseObjective(VideoObjective):
    """The warped source's pyramid L1 (`loss.warp`) always; the edited frame's terms after `warp_only_steps`
    (weighted 0 before, so the editing net is in every step's graph, as DDP's static graph wants)."""

    stage = "coarse"

    def __init__(self, model, loss: VideoLossConfig, warp_only_steps: int):
        super().__init__(model, None, loss)
        self.warp_only_steps, self.step = warp_only_steps, 0

    def set_step(self, step: int) -> None:
        self.step = step

    def generate(self, x: dict, _before: dict) -> torch.Tensor:
        return self.model(x["source"], x["motion"], x["source_pose"], x["speech"])["image"]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = self.inputs(batch)
        out = self.model(x["source"], x["motion"], x["source_pose"], x["speech"])
        warp = pyramid_l1(out["warped"], x["target"])
        image = self.image_loss(out["image"], x["target"])
        joint = float(self.step >= self.warp_only_steps)
        loss = self.loss_cfg.warp * warp + joint * image.pop("total")
        return {"loss": loss, "warp_l1": warp.detach(), **image,
                **shares({"copy": x["source"], "coarse": out["image"]}, x["target"], x["lips"])}


class RefineObjective(VideoObjective):
    """Over the frozen CoarseNet: the refined frame's terms with the L1 weighted up inside the lips (`loss.lip`) and
    below the nose (`loss.lower_face`), and optionally the frozen lip-sync expert's judgement (`loss.sync`)."""

    stage = "refine"

    def __init__(self, model, frozen: Cascade, loss: VideoLossConfig, expert: SyncExpert | None = None):
        super().__init__(model, frozen, loss)
        self.expert = expert.eval().requires_grad_(False) if expert is not None else None

    def generate(self, x: dict, before: dict) -> torch.Tensor:
        return self.model(before["coarse"], x["motion"], x["source_pose"], x["speech"])["image"]

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


class EnhanceObjective(VideoObjective):
    """Over the frozen CoarseNet and RefineNet: the enhanced frame's terms, plus LSGAN and feature matching against
    a patch discriminator when `loss.gan` > 0 (the loop trains the discriminator: `discriminator_loss`)."""

    stage = "enhance"

    def __init__(self, model: Enhancer, frozen: Cascade, loss: VideoLossConfig):
        super().__init__(model, frozen, loss)
        self.discriminator = PatchDiscriminator(model.cfg.disc_base) if loss.gan > 0 else None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def generate(self, x: dict, before: dict) -> torch.Tensor:
        return self.model(before["refine"], x["source"])

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


# ------------------------------------------------------------------ the trainers
def with_speech(model_cfg, data: FrameConfig, speech_dim: int):
    """The model config with the motion encoder sized to the data's speech features (or without speech)."""
    motion = model_cfg.motion.model_copy(update={"speech": data.speech is not None,
                                                 "speech_dim": speech_dim or model_cfg.motion.speech_dim})
    return model_cfg.model_copy(update={"motion": motion})


def _check_frozen(stage: str, data: FrameConfig, frozen_sidecar: dict, name: str) -> None:
    """A stage must see the data its frozen predecessors were trained on: the same size and speech features."""
    before = frozen_sidecar["config"]["data"]
    for key in ("size", "speech", "motion_window", "audio_window"):
        if before[key] != getattr(data, key):
            raise ValueError(f"data.{key} = {getattr(data, key)!r} but the {name} this {stage} run builds on was "
                             f"trained with {before[key]!r}")


def _run(stage: str, manifest, out_dir, cfg: VideoTrainConfig, objective: VideoObjective, data: FrameConfig,
         holdout, device) -> Path:
    sidecar = {**run_record(stage, cfg.model_copy(update={"data": data, "model": objective.model.cfg}), manifest),
               "features": feature_versions(manifest, data.speech, None),
               "pipeline": load_manifest(manifest).get("pipeline")}   # how the faces were cropped: generation does so
    evaluate = (lambda: holdout_figures(objective, holdout, data, cfg.holdout_batches, cfg.loop.batch_size,
                                        device)) if holdout else None
    return train(stage, out_dir, objective.to(device), manifest_batches(manifest, data, cfg.loop, frame_loader),
                 cfg.loop, sidecar, evaluate=evaluate, device=device)


def train_coarse(manifest: str | Path, out_dir: str | Path, cfg: TrainCoarseConfig = TrainCoarseConfig(),
                 holdout: str | Path | None = None) -> Path:
    """Train (or resume) CoarseNet in out_dir until cfg.loop.max_steps; returns the last checkpoint's path."""
    torch.manual_seed(cfg.loop.seed)
    device = pick_device(cfg.loop.device)
    data = resolve_speech(manifest, cfg.data)
    model = build_stage("coarse", {"config": {"model": with_speech(cfg.model, data, speech_dim(manifest, data))
                                              .model_dump()}})
    objective = CoarseObjective(model, cfg.loss, cfg.warp_only_steps)
    return _run("coarse", manifest, out_dir, cfg, objective, data, holdout, device)


def _frozen(out_dir: Path, upto: str, from_run, flag: str, device) -> tuple[Cascade, dict]:
    """The frozen stages a run builds on (copied into out_dir), and the last one's sidecar."""
    stages, sidecar = {}, None
    for name in ("coarse", "refine")[:("coarse", "refine").index(upto) + 1]:
        stages[name], sidecar = copy_stage(out_dir, name, from_run, build=KINDS[name].build,
                                           flag=flag, device=device)
    return Cascade(stages["coarse"], stages.get("refine")).to(device).eval(), sidecar


def _expert(out_dir: Path, sync_run, cfg: VideoTrainConfig, device) -> SyncExpert | None:
    if cfg.loss.sync <= 0:
        return None
    expert, _ = copy_stage(out_dir, "sync", sync_run, build=KINDS["sync"].build, flag="--sync", device=device)
    return expert


def train_refine(manifest: str | Path, out_dir: str | Path, cfg: TrainRefineConfig = TrainRefineConfig(),
                 coarse_run: str | Path | None = None, holdout: str | Path | None = None,
                 sync_run: str | Path | None = None) -> Path:
    """Train (or resume) RefineNet over a frozen CoarseNet run (copied into out_dir)."""
    torch.manual_seed(cfg.loop.seed)
    device, out_dir = pick_device(cfg.loop.device), Path(out_dir)
    data = resolve_speech(manifest, cfg.data)
    frozen, coarse_sidecar = _frozen(out_dir, "coarse", coarse_run, "--coarse", device)
    _check_frozen("refine", data, coarse_sidecar, "CoarseNet")
    model = build_stage("refine", {"config": {"model": with_speech(cfg.model, data, speech_dim(manifest, data))
                                              .model_dump()}})
    objective = RefineObjective(model, frozen, cfg.loss, _expert(out_dir, sync_run, cfg, device))
    return _run("refine", manifest, out_dir, cfg, objective, data, holdout, device)


def train_enhance(manifest: str | Path, out_dir: str | Path, cfg: TrainEnhanceConfig = TrainEnhanceConfig(),
                  refine_run: str | Path | None = None, holdout: str | Path | None = None) -> Path:
    """Train (or resume) the enhancer over a frozen refine run's CoarseNet and RefineNet (copied into out_dir)."""
    torch.manual_seed(cfg.loop.seed)
    device, out_dir = pick_device(cfg.loop.device), Path(out_dir)
    data = resolve_speech(manifest, cfg.data)
    frozen, refine_sidecar = _frozen(out_dir, "refine", refine_run, "--refine", device)
    _check_frozen("enhance", data, refine_sidecar, "RefineNet")
    objective = EnhanceObjective(Enhancer(cfg.model), frozen, cfg.loss)
    return _run("enhance", manifest, out_dir, cfg, objective, data, holdout, device)
