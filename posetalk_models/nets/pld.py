"""Pose Latent Diffusion (PLD): denoises the pose VAE's latent tokens, conditioned on a prompt embedding, the window's
frame-aligned speech features and the diffusion timestep.

The denoiser is a pre-norm transformer over one sequence: [timestep token, text token, T audio tokens, L latent
tokens] (conditions as tokens concatenated with the noisy latent), with long skip connections between the first and
the last half of the blocks (U-ViT style: block i's output is concatenated to the input of block n-1-i and projected
back), which keeps fine detail of the noisy input reachable from the output layers. It predicts the noise (epsilon).

Classifier-free guidance: in training the text and the audio are each replaced by a learned null token with their own
probability, independently, so one model serves the three conditioning modes ("audio", "text", "both"); sampling
uses eps = eps_cond + s * (eps_cond - eps_uncond), so guidance s = 0 is plain conditional sampling.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from posetalk_data.config import Section

from posetalk_models.nets.vae import sinusoid

MODES = ("audio", "text", "both")
Mode = Literal["audio", "text", "both"]


class PLDConfig(Section):
    d_model: int = 128
    heads: int = 4
    layers: int = 5               # odd: (layers - 1) / 2 blocks each side of the middle block, joined by long skips
    ff_mult: int = 4
    dropout: float = 0.1
    timesteps: int = 1000         # DDPM steps in training
    beta_start: float = 0.00085   # scaled-linear schedule (latent diffusion's)
    beta_end: float = 0.012
    p_drop_text: float = 0.1      # classifier-free guidance: drop each condition independently
    p_drop_audio: float = 0.1
    # filled from the VAE and the data by the trainer (stored in the checkpoint):
    latent_tokens: int = 4
    latent_dim: int = 16
    speech_dim: int = 80
    text_dim: int = 384
    window: int = 16

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        return self


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(b,) integer or float timesteps -> (b, dim) sinusoidal features."""
    freq = torch.exp(torch.arange(0, dim, 2, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angle = t.float()[:, None] * freq[None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], -1)


class Block(nn.Module):
    """Pre-norm transformer block; `skip` (from the mirrored early block) is concatenated and projected first."""

    def __init__(self, cfg: PLDConfig, with_skip: bool):
        super().__init__()
        d = cfg.d_model
        self.skip = nn.Linear(2 * d, d) if with_skip else None
        self.layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff_mult * d, cfg.dropout, batch_first=True,
                                                norm_first=True)

    def forward(self, h: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip is not None:
            h = self.skip(torch.cat([h, skip], -1))
        return self.layer(h)


class Denoiser(nn.Module):
    def __init__(self, cfg: PLDConfig):
        super().__init__()
        if cfg.layers % 2 == 0:
            raise ValueError(f"PLD layers must be odd (in-blocks, middle, out-blocks), got {cfg.layers}")
        self.cfg = c = cfg
        d = c.d_model
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.text = nn.Linear(c.text_dim, d)
        self.audio = nn.Sequential(nn.LayerNorm(c.speech_dim), nn.Linear(c.speech_dim, d))
        self.null_text = nn.Parameter(torch.randn(d) * 0.02)
        self.null_audio = nn.Parameter(torch.randn(d) * 0.02)
        self.latent_in = nn.Linear(c.latent_dim, d)
        self.type_pos = nn.Parameter(torch.randn(2 + c.latent_tokens, d) * 0.02)   # time, text, latent positions
        half = c.layers // 2
        self.down = nn.ModuleList(Block(c, False) for _ in range(half))
        self.mid = Block(c, False)
        self.up = nn.ModuleList(Block(c, True) for _ in range(half))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c.latent_dim))
        nn.init.zeros_(self.out[1].weight)   # starts by predicting zero noise: a calm first step
        nn.init.zeros_(self.out[1].bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None, audio: torch.Tensor | None,
                drop_text: torch.Tensor | None = None, drop_audio: torch.Tensor | None = None) -> torch.Tensor:
        """z (b, L, Z) noisy latents, t (b,), text (b, Dt), audio (b, T, Da); drop_* (b,) bool masks replace that
        condition by its null token (a None condition is dropped for every row) -> predicted noise (b, L, Z)."""
        b, c, d = z.shape[0], self.cfg, self.cfg.d_model
        pos = self.type_pos
        time_tok = self.time(timestep_embedding(t, d))[:, None] + pos[0]
        text_tok = self._maybe_null(None if text is None else self.text(text.float())[:, None], drop_text,
                                    self.null_text, b, 1) + pos[1]
        audio_tok = self._maybe_null(None if audio is None else self.audio(audio.float()), drop_audio,
                                     self.null_audio, b, c.window) + sinusoid(c.window, d, z.device)
        latent_tok = self.latent_in(z) + pos[2:]
        h = torch.cat([time_tok, text_tok, audio_tok, latent_tok], 1)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.mid(h)
        for block in self.up:
            h = block(h, skips.pop())
        return self.out(h[:, -c.latent_tokens:])

    @staticmethod
    def _maybe_null(tokens: torch.Tensor | None, drop: torch.Tensor | None, null: torch.Tensor, b: int,
                    n: int) -> torch.Tensor:
        nulls = null.expand(b, n, -1)
        if tokens is None:
            return nulls
        if drop is None:
            return tokens
        return torch.where(drop[:, None, None], nulls, tokens)


class PoseLatentDiffusion(nn.Module):
    """Denoiser + DDPM noise schedule + the latent normalisation (buffers, saved with the weights)."""

    def __init__(self, cfg: PLDConfig):
        super().__init__()
        self.cfg = cfg
        self.denoiser = Denoiser(cfg)
        betas = torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, cfg.timesteps, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_tokens, cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_tokens, cfg.latent_dim))

    def set_latent_stats(self, latents: torch.Tensor) -> None:
        """Latents (n, L, Z) of the training data (VAE posterior means) -> per-element mean/std for unit scale."""
        self.latent_mean.copy_(latents.mean(0))
        self.latent_std.copy_(latents.std(0).clamp_min(1e-4))

    def to_unit(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean) / self.latent_std

    def from_unit(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std + self.latent_mean

    def forward(self, latents: torch.Tensor, text: torch.Tensor | None, audio: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
        """DDPM training loss for VAE latents (b, L, Z): noise a random timestep, predict the noise (MSE)."""
        x0 = self.to_unit(latents)
        b = x0.shape[0]
        t = torch.randint(0, self.cfg.timesteps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        a = self.alphas_cumprod[t][:, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        drop_text = torch.rand(b, device=x0.device) < self.cfg.p_drop_text
        drop_audio = torch.rand(b, device=x0.device) < self.cfg.p_drop_audio
        eps = self.denoiser(xt, t, text, audio, drop_text, drop_audio)
        loss = F.mse_loss(eps.float(), noise)
        return {"loss": loss, "mse": loss.detach()}

    def guided_eps(self, xt: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None, audio: torch.Tensor | None,
                   mode: Mode, guidance: float) -> torch.Tensor:
        """Noise prediction for a conditioning mode with classifier-free guidance s: eps_c + s (eps_c - eps_u)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        text_c = text if mode in ("text", "both") else None
        audio_c = audio if mode in ("audio", "both") else None
        if (mode != "audio" and text is None) or (mode != "text" and audio is None):
            raise ValueError(f"mode {mode!r} needs {'text' if text is None else 'audio'} features")
        eps_c = self.denoiser(xt, t, text_c, audio_c)
        if guidance == 0:
            return eps_c
        eps_u = self.denoiser(xt, t, None, None)
        return eps_c + guidance * (eps_c - eps_u)

    @torch.no_grad()
    def sample(self, n: int, text: torch.Tensor | None = None, audio: torch.Tensor | None = None, *,
               mode: Mode = "both", guidance: float = 2.0, steps: int = 50, eta: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM sampling of n latent windows (n, L, Z) in VAE units. text (n, Dt), audio (n, T, Da)."""
        c = self.cfg
        device = self.alphas_cumprod.device
        x = torch.randn(n, c.latent_tokens, c.latent_dim, generator=generator, device=device)
        times = torch.linspace(c.timesteps - 1, 0, min(steps, c.timesteps), device=device).round().long()
        for i, t in enumerate(times):
            a = self.alphas_cumprod[t]
            a_prev = self.alphas_cumprod[times[i + 1]] if i + 1 < len(times) else torch.ones((), device=device)
            eps = self.guided_eps(x, t.expand(n), text, audio, mode, guidance)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
            noise = torch.randn(x.shape, generator=generator, device=device) if eta > 0 else 0.0
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp_min(0).sqrt() * eps + sigma * noise
        return self.from_unit(x)
