"""Pose VAE: a transformer encoder compresses a (b, t, C) motion window into a few latent tokens, a transformer
decoder rebuilds any length t from them with sinusoidal time queries (so windows need no fixed length)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from posetalk_data.config import Section


class PoseVAEConfig(Section):
    channels: int = 10          # C: motion channels per frame (posetalk_models.data.windows.CHANNELS)
    d_model: int = 128
    heads: int = 4
    enc_layers: int = 3
    dec_layers: int = 3
    ff_mult: int = 4
    latent_tokens: int = 4      # L: latent tokens per window
    latent_dim: int = 32        # Z: size of each latent token
    dropout: float = 0.1
    kl_weight: float = 1e-3     # beta: small, so reconstructions stay sharp
    huber_delta: float = 1.0    # in normalised (std) units

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        return self


def sinusoid(t: int, dim: int, device=None) -> torch.Tensor:
    """(t, dim) fixed sinusoidal time embedding."""
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(t, dim, device=device)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


def length_mask(lengths: torch.Tensor | None, b: int, t: int, device) -> torch.Tensor:
    """(b, t) True on real frames."""
    if lengths is None:
        return torch.ones(b, t, dtype=torch.bool, device=device)
    return torch.arange(t, device=device)[None] < lengths.to(device)[:, None]


class PoseVAE(nn.Module):
    def __init__(self, cfg: PoseVAEConfig = PoseVAEConfig()):
        super().__init__()
        self.cfg = c = cfg
        layer = dict(d_model=c.d_model, nhead=c.heads, dim_feedforward=c.ff_mult * c.d_model, dropout=c.dropout,
                     batch_first=True, norm_first=True)
        self.inp = nn.Linear(c.channels, c.d_model)
        self.latent_queries = nn.Parameter(torch.randn(c.latent_tokens, c.d_model) * 0.02)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), c.enc_layers,
                                             enable_nested_tensor=False)
        self.to_dist = nn.Linear(c.d_model, 2 * c.latent_dim)
        self.from_z = nn.Linear(c.latent_dim, c.d_model)
        self.latent_pos = nn.Parameter(torch.randn(c.latent_tokens, c.d_model) * 0.02)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), c.dec_layers)
        self.query = nn.Linear(c.d_model, c.d_model)  # lets the decoder learn its own use of the time code
        self.out = nn.Sequential(nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.channels))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.distributions.Normal]:
        """x (b, t, C), lengths (b,) -> z (b, L, Z) sampled in training (the mean in eval), dist over (b, L, Z)."""
        b, t, _ = x.shape
        h = self.inp(x) + sinusoid(t, self.cfg.d_model, x.device)                      # (b, t, d)
        h = torch.cat([self.latent_queries.expand(b, -1, -1), h], 1)                    # (b, L + t, d)
        valid = torch.cat([torch.ones(b, self.cfg.latent_tokens, dtype=torch.bool, device=x.device),
                           length_mask(lengths, b, t, x.device)], 1)
        h = self.encoder(h, src_key_padding_mask=~valid)[:, :self.cfg.latent_tokens]  # (b, L, d)
        mu, logvar = self.to_dist(h).chunk(2, -1)                                       # (b, L, Z) each
        dist = torch.distributions.Normal(mu, torch.exp(0.5 * logvar.clamp(-12, 8)))
        return (dist.rsample() if self.training else mu), dist

    def decode(self, z: torch.Tensor, t: int) -> torch.Tensor:
        """z (b, L, Z) -> x_hat (b, t, C)."""
        memory = self.from_z(z) + self.latent_pos                                       # (b, L, d)
        queries = self.query(sinusoid(t, self.cfg.d_model, z.device)).expand(z.shape[0], -1, -1)  # (b, t, d)
        return self.out(self.decoder(queries, memory))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.distributions.Normal]:
        z, dist = self.encode(x, lengths)
        return self.decode(z, x.shape[1]), dist

    def loss(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"loss", "recon" (Huber over real frames), "kl" (per latent element)} for a normalised batch."""
        x_hat, dist = self(x, lengths)
        mask = length_mask(lengths, x.shape[0], x.shape[1], x.device)[..., None].float()  # (b, t, 1)
        huber = F.huber_loss(x_hat.float(), x.float(), reduction="none", delta=self.cfg.huber_delta)
        recon = (huber * mask).sum() / (mask.sum() * x.shape[-1])
        kl = torch.distributions.kl_divergence(dist, torch.distributions.Normal(0.0, 1.0)).mean()
        return {"loss": recon + self.cfg.kl_weight * kl, "recon": recon, "kl": kl}
