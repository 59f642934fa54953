"""The project's lip-sync expert: does a short window of mouth crops go with a window of speech features?

Trained from the same shards (`posetalk-train sync`), in the manner of Wav2Lip's expert SyncNet (Prajwal et al.
2020): `frames` consecutive mouth crops stacked on the channel axis and the speech features of the same frames are
embedded separately; their cosine similarity, through a learned logistic (scale and bias), is the probability that
they are in sync, trained with binary cross-entropy against windows whose speech comes from elsewhere in the clip.
RefineNet can use its (frozen) judgement as a loss, and the evaluator reports its scores under the project's own
names ("posetalk sync"), never as SyncNet's LSE-C / LSE-D: the speech features and crops are ours, not SyncNet's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from posetalk_data.config import Section


class SyncExpertConfig(Section):
    frames: int = Field(5, ge=1)               # 0.2 s at 25 fps
    mouth_size: tuple[int, int] = (32, 64)     # (h, w) of the mouth crops
    speech_dim: int = 80                       # read from the data when a run starts
    base: int = Field(32, ge=4)
    embed: int = Field(256, ge=8)


def conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class SyncExpert(nn.Module):
    def __init__(self, cfg: SyncExpertConfig = SyncExpertConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.base
        self.face = nn.Sequential(conv_block(3 * cfg.frames, c, 1), conv_block(c, 2 * c, 2),
                                  conv_block(2 * c, 4 * c, 2), conv_block(4 * c, 8 * c, 2),
                                  conv_block(8 * c, 8 * c, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8 * c, cfg.embed))
        self.speech_norm = nn.LayerNorm(cfg.speech_dim)
        self.audio = nn.Sequential(nn.Conv1d(cfg.speech_dim, 4 * c, 3, padding=1), nn.ReLU(),
                                   nn.Conv1d(4 * c, 8 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                                   nn.Flatten(), nn.Linear(8 * c, cfg.embed))
        self.scale, self.bias = nn.Parameter(torch.tensor(5.0)), nn.Parameter(torch.tensor(-2.5))

    def similarity(self, mouths: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        """mouths (b, 3 * frames, h, w) in [-1, 1]; speech (b, frames, D) -> cosine similarity (b,)."""
        v = F.normalize(self.face(mouths), dim=-1)                                      # (b, embed)
        a = F.normalize(self.audio(self.speech_norm(speech).transpose(1, 2)), dim=-1)   # (b, embed)
        return (v * a).sum(-1)

    def forward(self, mouths: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        """Logit that the mouths and the speech are in sync, (b,)."""
        return self.scale * self.similarity(mouths, speech) + self.bias

    def loss(self, mouths: torch.Tensor, speech: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        logit = self(mouths, speech)
        loss = F.binary_cross_entropy_with_logits(logit, label)
        accuracy = ((logit > 0).float() == label).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}
