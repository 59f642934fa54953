"""Layers the video generator's networks share: the motion encoder (PoseTalk's "Motion2Latent"), AdaIN-modulated
residual blocks, and flow warping. nn.Modules only; shapes in comments.

Conventions: images are float in [-1, 1], (b, 3, h, w). A flow is an offset in grid_sample's normalised coordinates
(x then y, -1..1 across the image, align_corners=False), so it means the same at every resolution; warping samples
the source where the flow points (backward warping), borders replicated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from posetalk_data.config import Section


class MotionConfig(Section):
    """The driving condition [gaze; pose; speech] of one target frame, encoded to one latent vector."""
    motion_channels: int = 10     # yaw, pitch, roll, 4 gaze angles (deg), dx, dy, dlog_s (posetalk_models.data.frames)
    pose_channels: int = 7        # the source frame's angles
    speech_dim: int = 80          # D of the manifest's speech features (read from the data when a run starts)
    hidden: int = 128
    latent: int = 128             # the motion latent every AdaIN layer is modulated by
    angle_scale: float = 30.0     # degrees -> about unit range
    move_scale: float = 0.25      # face-scale units -> about unit range
    speech: bool = True           # False: pose and gaze only (a model that ignores the audio)


class MotionEncoder(nn.Module):
    """Motion2Latent: (b, W, 10) motion window + (b, 7) source angles + (b, A, D) speech window -> (b, latent).

    Two temporal conv branches (motion relative to the source, speech), each pooled over its window, then an MLP."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.motion = nn.Sequential(nn.Conv1d(cfg.motion_channels + cfg.pose_channels, h, 3, padding=1), nn.GELU(),
                                    nn.Conv1d(h, h, 3, padding=1), nn.GELU())
        if cfg.speech:
            self.speech_norm = nn.LayerNorm(cfg.speech_dim)
            self.speech = nn.Sequential(nn.Conv1d(cfg.speech_dim, h, 3, padding=1), nn.GELU(),
                                        nn.Conv1d(h, h, 3, padding=1), nn.GELU())
        self.out = nn.Sequential(nn.Linear(h * (2 if cfg.speech else 1), cfg.latent), nn.GELU(),
                                 nn.Linear(cfg.latent, cfg.latent))

    def scaled(self, motion: torch.Tensor, source_pose: torch.Tensor) -> torch.Tensor:
        """(b, W, 10), (b, 7) -> (b, W, 17) in about unit range: target angles, movement, the source's angles."""
        c = self.cfg
        angles, move = motion[..., :c.pose_channels] / c.angle_scale, motion[..., c.pose_channels:] / c.move_scale
        source = (source_pose / c.angle_scale)[:, None].expand(-1, motion.shape[1], -1)
        return torch.cat([angles, move, source], -1)

    def forward(self, motion: torch.Tensor, source_pose: torch.Tensor, speech: torch.Tensor | None) -> torch.Tensor:
        parts = [self.motion(self.scaled(motion, source_pose).transpose(1, 2)).mean(-1)]   # (b, h)
        if self.cfg.speech:
            if speech is None:
                raise ValueError("this model was built with speech features: pass the speech window")
            parts.append(self.speech(self.speech_norm(speech).transpose(1, 2)).mean(-1))     # (b, h)
        return self.out(torch.cat(parts, -1))                                                # (b, latent)


class AdaIN(nn.Module):
    """Instance norm whose scale and shift come from the motion latent (starts as plain instance norm)."""

    def __init__(self, channels: int, latent: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.style = nn.Linear(latent, 2 * channels)
        nn.init.zeros_(self.style.weight)
        nn.init.zeros_(self.style.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(z)[:, :, None, None].chunk(2, 1)   # (b, c, 1, 1) each
        return self.norm(x) * (1 + gamma) + beta


class ResBlock(nn.Module):
    """conv-AdaIN-act twice with a skip; `z` None makes it an unmodulated block (group norm)."""

    def __init__(self, c_in: int, c_out: int, latent: int | None):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        norm = (lambda c: AdaIN(c, latent)) if latent else (lambda c: nn.GroupNorm(min(8, c), c))
        self.norm1, self.norm2 = norm(c_out), norm(c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _norm(self, norm: nn.Module, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return norm(x, z) if isinstance(norm, AdaIN) else norm(x)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = F.leaky_relu(self._norm(self.norm1, self.conv1(x), z), 0.2)
        h = F.leaky_relu(self._norm(self.norm2, self.conv2(h), z), 0.2)
        return h + self.skip(x)


def widths(base: int, levels: int, cap: int) -> list[int]:
    """Channels per level of an encoder that halves the resolution each level: base, 2 base, ... up to cap."""
    return [min(base * 2 ** i, cap) for i in range(levels + 1)]


def zero_conv(c_in: int, c_out: int, k: int = 3) -> nn.Conv2d:
    """A conv that outputs 0 at first: flows start as identity warps, residuals as 'change nothing'."""
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def base_grid(b: int, h: int, w: int, device, dtype) -> torch.Tensor:
    """(b, h, w, 2) grid_sample coordinates of every pixel centre (align_corners=False)."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)[None].expand(b, -1, -1, -1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample (b, c, h, w) at base grid + flow; flow (b, 2, h', w') is resized to (h, w) first."""
    b, _, h, w = image.shape
    if flow.shape[-2:] != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    grid = base_grid(b, h, w, image.device, image.dtype) + flow.permute(0, 2, 3, 1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, h, w) from the loader -> float in [-1, 1]."""
    return images.float() / 127.5 - 1
