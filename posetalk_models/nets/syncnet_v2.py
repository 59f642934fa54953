"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", 2016) as released with its evaluation
code (joonson/syncnet_python, MIT), for LSE-D / LSE-C with the original `syncnet_v2.model` weights.

The layer layout (and so the parameter names) follows that release, so its weight file loads as it is: a lip
stream of 3D convolutions over 5 RGB frames of 224 x 224 (BGR, 0..255) and an audio stream of 2D convolutions over
13 MFCCs x 20 steps (0.2 s at 100 Hz), each ending in a 1024-d embedding. `lse(frames, audio)` follows the release's
evaluation: embeddings of every 5-frame window and its 0.2 s of audio, the mean Euclidean distance at each audio
shift of -15..15 frames; LSE-D is the smallest mean distance, LSE-C the median minus it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from posetalk_data.weights import checkpoint_file


def _conv(kind, c_in: int, c_out: int, k, **kw) -> list[nn.Module]:
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if kind == 2 else (nn.Conv3d, nn.BatchNorm3d)
    return [conv(c_in, c_out, kernel_size=k, **kw), norm(c_out), nn.ReLU(inplace=True)]


class SyncNetV2(nn.Module):
    def __init__(self, embed: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(                          # (n, 1, 13, 20) MFCC -> (n, 512, 1, 1)
            *_conv(2, 1, 64, (3, 3), padding=(1, 1)), nn.MaxPool2d((1, 1), (1, 1)),
            *_conv(2, 64, 192, (3, 3), padding=(1, 1)), nn.MaxPool2d((3, 3), (1, 2)),
            *_conv(2, 192, 384, (3, 3), padding=(1, 1)),
            *_conv(2, 384, 256, (3, 3), padding=(1, 1)),
            *_conv(2, 256, 256, (3, 3), padding=(1, 1)), nn.MaxPool2d((3, 3), (2, 2)),
            *_conv(2, 256, 512, (5, 4), padding=(0, 0)))
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed))
        self.netcnnlip = nn.Sequential(                          # (n, 3, 5, 224, 224) -> (n, 512, 1, 1, 1)
            *_conv(3, 3, 96, (5, 7, 7), stride=(1, 2, 2), padding=0), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv(3, 96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
            *_conv(3, 256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv(3, 256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv(3, 256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv(3, 256, 512, (1, 6, 6), padding=0))

    def audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def lips(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet(path: str | Path | None, device="cpu") -> SyncNetV2:
    """From `path`, else syncnet_v2.model in the torch hub cache (where `posetalk-data models pull` puts it)."""
    path = checkpoint_file("SyncNet v2 (LSE-D / LSE-C)", path, "syncnet", "--syncnet-weights")
    model = SyncNetV2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def mfcc(audio: np.ndarray) -> np.ndarray:
    """(13, steps) MFCCs at 100 Hz of 16 kHz float audio, scaled as the release reads 16-bit wav files."""
    import python_speech_features

    return python_speech_features.mfcc(audio * 32768.0, 16000).T.astype(np.float32)


def syncnet_crops(frames: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) RGB face crops (posetalk's framing: the face box is half the crop) -> (T, 224, 224, 3) BGR,
    re-cut to the release's framing around a face box (1.4 box widths wide, from 0.5 above the centre to 0.9 below)."""
    import cv2

    s = frames.shape[1]
    x0, x1, y0, y1 = round(0.15 * s), round(0.85 * s), round(0.25 * s), round(0.95 * s)
    return np.stack([cv2.resize(f[y0:y1, x0:x1, ::-1], (224, 224), interpolation=cv2.INTER_LINEAR) for f in frames])


@torch.no_grad()
def lse(model: SyncNetV2, frames: np.ndarray, audio: np.ndarray, *, vshift: int = 15, batch: int = 20
        ) -> dict[str, float]:
    """{"lse_d", "lse_c", "offset"} of (T, S, S, 3) RGB frames at 25 fps and their 16 kHz audio."""
    device = next(model.parameters()).device
    crops = torch.from_numpy(syncnet_crops(frames)).float().permute(3, 0, 1, 2)      # (3, T, 224, 224)
    cc = torch.from_numpy(mfcc(audio))                                                # (13, steps)
    length = min(len(frames), len(audio) // 640)
    windows = range(max(min(length - 5, (cc.shape[1] - 20) // 4 + 1), 0))   # whole 5-frame / 20-step windows
    if not windows:
        return {"lse_d": float("nan"), "lse_c": float("nan"), "offset": 0}
    lip, aud = [], []
    for start in range(0, len(windows), batch):
        idx = windows[start:start + batch]
        lip.append(model.lips(torch.stack([crops[:, i:i + 5] for i in idx]).to(device)).cpu())
        aud.append(model.audio(torch.stack([cc[None, :, 4 * i:4 * i + 20] for i in idx]).to(device)).cpu())
    lip, aud = torch.cat(lip), torch.cat(aud)
    padded = nn.functional.pad(aud, (0, 0, vshift, vshift))
    dists = torch.stack([nn.functional.pairwise_distance(lip[[i]].expand(2 * vshift + 1, -1),
                                                         padded[i:i + 2 * vshift + 1]) for i in range(len(lip))])
    mean = dists.mean(0)                                                             # (2 vshift + 1,)
    minval, minidx = mean.min(0)
    return {"lse_d": float(minval), "lse_c": float(mean.median() - minval), "offset": int(vshift - minidx)}
