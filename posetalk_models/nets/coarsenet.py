"""CoarseNet, stage 1 of PoseTalk's video generator: the source frame animated into the target's head pose, gaze and
(coarse) mouth motion.

PoseTalk publishes only the outline (source frame + per-frame [gaze; pose; speech] -> coarse motion -> Motion2Latent
-> the source in the new pose). The design follows PIRender (Ren et al. 2021), the open system closest to a
generator driven by pose coefficients, in our own layers: a motion encoder over a short window of the driving
signals gives one latent (layers.MotionEncoder, PoseTalk's Motion2Latent); an AdaIN-modulated U-Net over the source
predicts a backward flow at 1/`flow_down` of the resolution, which warps the source (the "coarse" motion); an
AdaIN-modulated editing U-Net over [warped, source] adds a residual for what warping cannot make (occlusions,
the inside of the mouth). Both heads start at zero: a fresh CoarseNet returns the source unchanged, so early
training is stable, and the warp is trained alone for `warp_only_steps` before the editing net joins (PIRender).

Sizes (config): the paper size is 256 px (base 32 channels, 4 levels, 8.6 M parameters); 512 px adds a level;
`tiny` is 64 px with base 8 and trains on a CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from posetalk_data.config import Section

from posetalk_models.nets.layers import MotionConfig, MotionEncoder, ResBlock, warp, widths, zero_conv


class CoarseNetConfig(Section):
    size: int = Field(256, ge=32)        # image side the network is trained at
    base: int = Field(32, ge=4)          # channels at full resolution, doubled per level
    max_channels: int = Field(256, ge=8)
    levels: int = Field(4, ge=2)         # encoder halvings: 256 px -> 16 px bottleneck
    flow_down: int = Field(4, ge=1)      # the flow is predicted at size / flow_down
    edit: bool = True                    # the editing net after the warp
    motion: MotionConfig = MotionConfig()


class ModulatedUNet(nn.Module):
    """(b, c_in, S, S) + latent -> features at S / 2^stop_level (decoder stops there); AdaIN in every block."""

    def __init__(self, c_in: int, chans: list[int], latent: int, stop_level: int = 0):
        super().__init__()
        self.stem = nn.Conv2d(c_in, chans[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        self.enc = nn.ModuleList(ResBlock(c, c, latent) for c in chans[1:])
        levels = len(chans) - 1
        self.up = nn.ModuleList(ResBlock(chans[i + 1] + chans[i], chans[i], latent)
                                for i in reversed(range(stop_level, levels)))
        self.out_channels = chans[stop_level]

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)                                   # (b, c0, S, S)
        skips = [h]
        for down, block in zip(self.down, self.enc):
            h = block(F.leaky_relu(down(h), 0.2), z)       # halves: (b, c_i, S/2^i, S/2^i)
            skips.append(h)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1), z)          # (b, c_i, S/2^i, S/2^i)
        return h


class CoarseNet(nn.Module):
    def __init__(self, cfg: CoarseNetConfig = CoarseNetConfig()):
        super().__init__()
        self.cfg = cfg
        chans = widths(cfg.base, cfg.levels, cfg.max_channels)
        stop = max(0, min(cfg.levels - 1, cfg.flow_down.bit_length() - 1))    # flow_down 4 -> decoder stops at 1/4
        self.motion = MotionEncoder(cfg.motion)
        self.warper = ModulatedUNet(3, chans, cfg.motion.latent, stop_level=stop)
        self.flow = zero_conv(self.warper.out_channels, 2)           # (b, 2, S/flow_down, ...): identity at first
        if cfg.edit:
            self.editor = ModulatedUNet(6, chans[:max(2, cfg.levels - 1)], cfg.motion.latent)
            self.residual = zero_conv(chans[0], 3)

    def forward(self, source: torch.Tensor, motion: torch.Tensor, source_pose: torch.Tensor,
                speech: torch.Tensor | None = None, *, edit: bool = True) -> dict[str, torch.Tensor]:
        """source (b, 3, S, S) in [-1, 1]; motion (b, W, 10); source_pose (b, 7); speech (b, A, D).
        Returns {"warped": the source warped, "image": warped + edit (= warped when edit is False), "flow"}."""
        z = self.motion(motion, source_pose, speech)                  # (b, latent)
        flow = self.flow(self.warper(source, z))                      # (b, 2, S/flow_down, S/flow_down)
        warped = warp(source, flow)                                   # (b, 3, S, S)
        image = warped
        if self.cfg.edit and edit:
            image = warped + self.residual(self.editor(torch.cat([warped, source], 1), z))
        return {"warped": warped, "image": image, "flow": flow, "latent": z}
