"""RefineNet, stage 2 of PoseTalk's video generator: finer lip motion on top of CoarseNet's frame, estimated
progressively from low to high resolution.

PoseTalk's outline: an image encoder on the coarse frame and a motion decoder conditioned on [gaze; pose; speech]
that refines the lips from low to high resolution, because trained jointly the lips (< 4 % of the reconstruction
loss) lose to the head. The coarse-to-fine decoder follows LIA (Wang et al. 2022) and the first author's ViCoFace, in
our own layers: the coarse frame is encoded into a feature pyramid; a decoder climbs from the bottleneck, and at
every level (from 8 px up) a head adds its flow and mask logits to the upsampled ones of the level below, so the
motion is refined scale by scale. Each level warps the encoder's features with its flow and blends them into the
decoder stream through its mask. The finest flow warps the coarse frame itself and a residual adds what a warp
cannot make (teeth, the inside of the mouth). All heads start at zero: a fresh RefineNet returns the coarse frame.
A speech encoder of its own (wider than CoarseNet's) feeds the motion latent: the audio is what the lips follow.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from posetalk_data.config import Section

from posetalk_models.nets.layers import MotionConfig, MotionEncoder, ResBlock, warp, widths, zero_conv


class RefineNetConfig(Section):
    size: int = Field(256, ge=32)
    base: int = Field(32, ge=4)
    max_channels: int = Field(256, ge=8)
    min_resolution: int = Field(8, ge=4)   # the coarsest level of the pyramid (flows from here up)
    max_flow: float = Field(0.25, gt=0)    # the largest offset a level can add (normalised units, tanh-bounded)
    motion: MotionConfig = MotionConfig(hidden=192, latent=192)


class RefineNet(nn.Module):
    def __init__(self, cfg: RefineNetConfig = RefineNetConfig()):
        super().__init__()
        self.cfg = cfg
        levels = max(1, (cfg.size // cfg.min_resolution).bit_length() - 1)   # 256 -> 8 px: 5 halvings
        chans = widths(cfg.base, levels, cfg.max_channels)
        latent = cfg.motion.latent
        self.motion = MotionEncoder(cfg.motion)
        self.stem = nn.Conv2d(3, chans[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        self.enc = nn.ModuleList(ResBlock(c, c, None) for c in chans[1:])
        # decoder, coarsest level first: a modulated block, then the level's flow+mask head
        self.dec = nn.ModuleList(ResBlock(chans[i + 1] if i < levels else chans[i], chans[i], latent)
                                 for i in reversed(range(levels + 1)))
        self.heads = nn.ModuleList(zero_conv(chans[i], 3) for i in reversed(range(levels + 1)))
        self.residual = zero_conv(chans[0], 3)

    def forward(self, coarse: torch.Tensor, motion: torch.Tensor, source_pose: torch.Tensor,
                speech: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """coarse (b, 3, S, S) in [-1, 1] (CoarseNet's image); motion (b, W, 10); source_pose (b, 7); speech
        (b, A, D). Returns {"image", "flow": the finest flow, "flows": one per level, coarsest first}."""
        z = self.motion(motion, source_pose, speech)                      # (b, latent)
        feats = [self.stem(coarse)]                                       # (b, c0, S, S)
        for down, block in zip(self.down, self.enc):
            feats.append(block(F.leaky_relu(down(feats[-1]), 0.2)))       # (b, c_i, S/2^i, S/2^i)
        h, logits, flows = feats[-1], None, []
        for block, head, feat in zip(self.dec, self.heads, reversed(feats)):
            if h.shape[-2:] != feat.shape[-2:]:
                h = F.interpolate(h, size=feat.shape[-2:], mode="bilinear", align_corners=False)
            h = block(h, z)                                               # (b, c_i, r, r)
            step = head(h)                                                # (b, 3, r, r): flow x, y, mask
            logits = step if logits is None else step + F.interpolate(logits, size=step.shape[-2:],
                                                                       mode="bilinear", align_corners=False)
            flow, mask = self.cfg.max_flow * torch.tanh(logits[:, :2]), torch.sigmoid(logits[:, 2:])
            h = mask * warp(feat, flow) + (1 - mask) * h                  # the level's warped features blended in
            flows.append(flow)
        image = warp(coarse, flows[-1]) + self.residual(h)                # (b, 3, S, S)
        return {"image": image, "flow": flows[-1], "flows": flows, "latent": z}
