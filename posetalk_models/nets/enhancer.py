"""The portrait enhancer, stage 3 of PoseTalk's video generator: RefineNet's frame and the source frame (repeated for
every output frame) -> the final frame.

PoseTalk names the stage and its inputs only. Ours is a U-Net over [refined, source] that adds a residual to the
refined frame (zero at first: a fresh enhancer changes nothing); it can copy detail the warps blurred (hair,
skin texture, teeth) from the source, which shows the same person. With the trainer's `gan` on, a single-scale patch
discriminator in the style of FOMM's (4 conv blocks, instance norm, LSGAN with feature matching) sharpens it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from posetalk_data.config import Section

from posetalk_models.nets.layers import ResBlock, widths, zero_conv


class EnhancerConfig(Section):
    size: int = Field(256, ge=32)
    base: int = Field(32, ge=4)
    max_channels: int = Field(256, ge=8)
    levels: int = Field(3, ge=1)
    disc_base: int = Field(64, ge=4)       # the discriminator's first width (used when the trainer's gan is on)


class Enhancer(nn.Module):
    def __init__(self, cfg: EnhancerConfig = EnhancerConfig()):
        super().__init__()
        self.cfg = cfg
        chans = widths(cfg.base, cfg.levels, cfg.max_channels)
        self.stem = nn.Conv2d(6, chans[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        self.enc = nn.ModuleList(ResBlock(c, c, None) for c in chans[1:])
        self.up = nn.ModuleList(ResBlock(chans[i + 1] + chans[i], chans[i], None) for i in reversed(range(cfg.levels)))
        self.residual = zero_conv(chans[0], 3)

    def forward(self, refined: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """refined, source (b, 3, S, S) in [-1, 1] -> (b, 3, S, S)."""
        h = self.stem(torch.cat([refined, source], 1))         # (b, c0, S, S)
        skips = [h]
        for down, block in zip(self.down, self.enc):
            h = block(F.leaky_relu(down(h), 0.2))               # (b, c_i, S/2^i, S/2^i)
            skips.append(h)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False),
                                 skip], 1))
        return refined + self.residual(h)


class PatchDiscriminator(nn.Module):
    """(b, 3, S, S) -> (patch scores (b, 1, s', s'), [block features]) for LSGAN and feature matching."""

    def __init__(self, base: int = 64, blocks: int = 4):
        super().__init__()
        chans = [3] + [base * 2 ** min(i, 3) for i in range(blocks)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 4, stride=2 if i < blocks - 1 else 1, padding=1),
                          nn.InstanceNorm2d(b, affine=True) if 0 < i < blocks - 1 else nn.Identity(),
                          nn.LeakyReLU(0.2))
            for i, (a, b) in enumerate(zip(chans, chans[1:])))
        self.score = nn.Conv2d(chans[-1], 1, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats, h = [], image
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        return self.score(h), feats
