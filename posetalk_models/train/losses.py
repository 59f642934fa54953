"""Losses and image figures of the video generator. Images are float in [-1, 1], (b, 3, h, w); masks (b, 1, h, w).

- pyramid L1 (4 scales, FOMM's pyramid idea), optionally weighted per pixel (RefineNet weights the lips up);
- SSIM (torchmetrics, no weights), as 1 - SSIM;
- a VGG19 perceptual term (relu1_1 .. relu5_1, L1 on features, the same pyramid), only when VGG19 ImageNet weights are
  given by path or found in the torch hub cache (`vgg19-dcbb9e9d.pth`); `vgg_weights: random` builds an untrained
  VGG19 for tests, never for real training;
- LSGAN and feature matching for the enhancer's discriminator;
- lip_share: the lips' share of the per-pixel L1 error, PoseTalk's "< 4 %" measured;
- ImageLoss: the weighted sum of pyramid L1, 1 - SSIM and the perceptual term that every video stage's output gets.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from posetalk_data.weights import checkpoint_file

from posetalk_models.train.config import VideoLossConfig

VGG_LAYERS = (1, 6, 11, 20, 29)          # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in torchvision's vgg19.features
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def pyramid(image: torch.Tensor, scales: int, min_side: int = 8) -> list[torch.Tensor]:
    """The image and its 2x, 4x, ... average-pooled versions (at most `scales`, none smaller than min_side)."""
    out = [image]
    while len(out) < scales and out[-1].shape[-1] // 2 >= min_side:
        out.append(F.avg_pool2d(out[-1], 2))
    return out


def pyramid_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
               scales: int = 4) -> torch.Tensor:
    """Mean over scales of the (weighted) mean absolute error."""
    weights = pyramid(weight, scales) if weight is not None else [None] * scales
    total = []
    for p, t, w in zip(pyramid(pred, scales), pyramid(target, scales), weights):
        err = (p - t).abs()
        total.append((err * w).sum() / (w.sum() * err.shape[1]).clamp_min(1e-6) if w is not None else err.mean())
    return torch.stack(total).mean()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred.float(), target.float(), data_range=2.0)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image (b,), in dB over pixels in [0, 1]; inf for identical images."""
    mse = ((pred.float() - target.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error inside the mask (per pixel and channel)."""
    return ((pred - target).abs() * mask).sum() / (mask.sum() * pred.shape[1]).clamp_min(1e-6)


def lip_share(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor) -> torch.Tensor:
    """The lips' share of the per-pixel L1 error over the whole frame: PoseTalk's "< 4 % of the loss"."""
    err = (pred.float() - target.float()).abs().sum(1, keepdim=True)
    return (err * lip_mask).sum() / err.sum().clamp_min(1e-8)


class Perceptual(nn.Module):
    """Pyramid L1 between VGG19 features (relu1_1 .. relu5_1), weight 1 per layer and scale. Frozen."""

    def __init__(self, weights: str | None, scales: int = 4):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["E"])[:VGG_LAYERS[-1] + 1]     # VGG19's convolutions, not its 120 M classifier
        if weights != "random":
            path = checkpoint_file("VGG19 (perceptual loss)", weights, "vgg19", "loss.vgg_weights")
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
            features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                      if k.startswith("features.") and int(k.split(".")[1]) <= VGG_LAYERS[-1]})
        self.features = features.eval().requires_grad_(False)
        self.scales = scales
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)      # always the frozen network

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], ((x + 1) / 2 - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG_LAYERS:
                out.append(h)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = []
        for p, t in zip(pyramid(pred, self.scales, 32), pyramid(target, self.scales, 32)):
            with torch.no_grad():
                want = self._features(t)
            total += [(a - b).abs().mean() for a, b in zip(self._features(p), want)]
        return torch.stack(total).mean()


def lsgan_generator(scores: torch.Tensor) -> torch.Tensor:
    return (1 - scores).pow(2).mean()


def lsgan_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return (1 - real).pow(2).mean() + fake.pow(2).mean()


def feature_matching(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(r.detach() - f).abs().mean() for r, f in zip(real, fake)]).mean()


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
