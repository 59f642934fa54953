"""Training windows read straight from a posetalk manifest with a composed webdataset pipeline.

Channels (C = 10, `CHANNELS`): yaw, pitch, roll (deg), gaze left yaw/pitch, right yaw/pitch (deg), then the head's
translation and scale *relative to the window's first frame* in face-scale units: dx = (x - x0) / s0,
dy = (y - y0) / s0, ds = log(s / s0). Making them window-relative and scale-normalised removes the source video's
resolution and framing, which carry no motion. `translation=False` keeps only the 7 angle channels.
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from posetalk_data.config import Section
from posetalk_data.manifest import load_manifest, open_shard, read_samples, safe_samples

CHANNELS = ("yaw", "pitch", "roll", "gaze_l_yaw", "gaze_l_pitch", "gaze_r_yaw", "gaze_r_pitch", "dx", "dy", "dlog_s")
ANGLE_CHANNELS = 7  # the first 7 channels are in degrees


class DataConfig(Section):
    window: int = 32                 # frames per window (25 fps)
    speech: str | None = "auto"     # speech member stem (hubert, wav2vec2, mel), "auto" (the manifest's) or None
    text: str | None = "auto"       # prompt-embedding member stem (clip_<model>, minilm), "auto" or None
    translation: bool = True         # add the 3 window-relative translation/scale channels
    windows_per_clip: int = 4        # windows cut from each clip per pass (clips are long, shards few)
    shuffle_buffer: int = 64         # windows held for shuffling
    resample: bool = True            # infinite, shards drawn with replacement (training); False = one epoch
    seed: int = 0


SPEECH_PREFERENCE = ("hubert", "wav2vec2", "mel")   # "auto" takes the first the manifest has


def resolve_features(manifest_path: str | Path, cfg: DataConfig) -> DataConfig:
    """Replace "auto" speech/text stems by the manifest's own (speech: hubert > wav2vec2 > mel; text: clip_* >
    minilm); a named stem the manifest lacks is an error that says how to add it."""
    members = {Path(m).stem for m in load_manifest(manifest_path).get("members", {}) if m.endswith(".npy")}
    found = {"speech": [s for s in SPEECH_PREFERENCE if s in members],
             "text": sorted(m for m in members if m.startswith("clip_")) + [m for m in members if m == "minilm"]}
    update = {}
    for role in ("speech", "text"):
        stem = getattr(cfg, role)
        if stem == "auto":
            if not found[role]:
                raise ValueError(f"{manifest_path}: no {role} features in the shards (add them with "
                                 f"`posetalk-data extend`, or set data.{role} to null)")
            update[role] = found[role][0]
        elif stem is not None and stem not in members:
            raise ValueError(f"{manifest_path}: no {stem}.npy in the shards (have: {', '.join(sorted(members))})")
    return cfg.model_copy(update=update)


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle shard contents


def motion_features(pose: np.ndarray, gaze: np.ndarray, *, translation: bool = True) -> np.ndarray:
    """pose [T,6], gaze [T,4] -> [T,C] float32 (C = 10 or 7), translation relative to frame 0."""
    parts = [pose[:, :3], gaze[:, :4]]
    if translation:
        s0 = max(float(pose[0, 5]), 1e-3)
        parts += [(pose[:, 3:5] - pose[0, 3:5]) / s0, np.log(np.maximum(pose[:, 5:6], 1e-3) / s0)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def pose_stats(manifest_path: str | Path, *, window: int = 32, translation: bool = True) -> dict:
    """Per-channel mean/std over every window-start of every sample (JSON-able, stored with checkpoints).

    Translation channels depend on the window start, so they are measured over windows starting every
    `window // 2` frames; angle channels over every frame."""
    rows = []
    for _, sample in read_samples(manifest_path):
        pose, gaze = _npy(sample["pose.npy"]), _npy(sample["gaze.npy"])
        for start in range(0, max(len(pose) - window, 0) + 1, max(window // 2, 1)):
            rows.append(motion_features(pose[start:start + window], gaze[start:start + window],
                                        translation=translation))
    if not rows:
        raise ValueError(f"{manifest_path}: no samples to compute statistics from")
    x = np.concatenate(rows).astype(np.float64)
    names = CHANNELS[:x.shape[1]]
    return {"channels": list(names), "mean": x.mean(0).tolist(),
            "std": np.maximum(x.std(0), 1e-3).tolist(), "frames": int(len(x))}


def normalise(x: torch.Tensor, stats: dict) -> torch.Tensor:
    mean = torch.as_tensor(stats["mean"], dtype=x.dtype, device=x.device)
    return (x - mean) / torch.as_tensor(stats["std"], dtype=x.dtype, device=x.device)


def denormalise(x: torch.Tensor, stats: dict) -> torch.Tensor:
    std = torch.as_tensor(stats["std"], dtype=x.dtype, device=x.device)
    return x * std + torch.as_tensor(stats["mean"], dtype=x.dtype, device=x.device)


def _stream_seed(seed: int) -> int:
    """Distinct, reproducible seed per (seed, node, worker, pass) so workers do not cut the same windows."""
    info = torch.utils.data.get_worker_info()
    rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() \
        else 0
    return hash((seed, rank, info.id if info else 0)) & 0x7FFFFFFF


# ------------------------------------------------------------------ epoch mode: an even split over ranks and workers
# A *piece* is every `step`-th of a shard's selected samples from `start` (a whole shard: start 0, step 1):
# {"path", "total": the shard's selected samples, "start", "step", "count": samples in the piece}.
def shard_piece(entry: dict) -> dict:
    """A manifest shard entry as the piece of all its selected samples ("keys" if listed, else "samples");
    a piece is returned as it is."""
    if "start" in entry:
        return entry
    total = len(entry["keys"]) if "keys" in entry else int(entry["samples"])
    return {"path": entry["path"], "total": total, "start": 0, "step": 1, "count": total}


def interleave(piece: dict, k: int) -> list[dict]:
    """k pieces taking every k-th sample of `piece` in turn; together they hold exactly its samples."""
    out = []
    for j in range(k):
        start, step = piece["start"] + j * piece["step"], piece["step"] * k
        out.append({**piece, "start": start, "step": step, "count": len(range(start, piece["total"], step))})
    return out


def split_shards(shards: list[dict], parts: int, seed: int) -> list[list[dict]]:
    """Shard entries (or pieces) dealt to `parts` ranks or workers with balanced sample counts: one list of pieces
    per part.

    A shard larger than an even share (total / parts samples) is first cut into interleaved pieces of about one
    share (each part then reads the whole tar but decodes only its samples), so fewer shards than parts, or a few
    big ones, still split evenly; empty pieces are dropped. Then greedy largest-first: each piece goes to the part
    with the fewest samples so far. Ties are broken by a seeded shuffle, so the deal depends only on (shards, parts,
    seed): every rank computes the same one. A part gets nothing only when there are fewer samples than parts."""
    pieces = [shard_piece(s) for s in shards]
    total = sum(p["count"] for p in pieces)
    pieces = [q for p in pieces for q in interleave(p, -(-p["count"] * parts // max(total, 1))) if q["count"]]
    rng = random.Random(seed)
    rng.shuffle(pieces)
    pieces.sort(key=lambda p: -p["count"])  # stable: equal counts stay in seeded order
    deal, loads = [[] for _ in range(parts)], [0] * parts
    for piece in pieces:
        i = loads.index(min(loads))
        deal[i].append(piece)
        loads[i] += piece["count"]
    for part in deal:   # read order: not by size, so big and small shards mix in the shuffle buffer
        rng.shuffle(part)
    return deal


def split_quota(totals: list[int], quota: int) -> list[int]:
    """`quota` <= sum(totals) shared in proportion to `totals`: each share <= its total, the shares sum to quota."""
    whole = sum(totals)
    shares = [quota * t // whole if whole else 0 for t in totals]
    for i in [i for i, (s, t) in enumerate(zip(shares, totals)) if s < t][:quota - sum(shares)]:
        shares[i] += 1   # the floors lose less than one per part, so one pass places the remainder
    return shares


def epoch_split(shards: list[dict], *, seed: int, windows_per_clip: int, rank: int, world: int, worker: int,
                workers: int) -> tuple[list[dict], int]:
    """(pieces, windows): what one DataLoader worker of one rank reads in an epoch and how many windows it yields.

    Shards are dealt to ranks, then each rank's pieces to its workers (`split_shards`). Every rank yields the same
    number of windows, the smallest rank's samples x windows_per_clip, shared by its workers in proportion to what
    they read: DDP never waits on a rank that ran out. A rank's surplus windows (the last ones out of its shuffle
    buffer) are dropped. Fewer samples than ranks gives every rank 0 windows rather than a hang. The counts are the
    manifest's (`posetalk-data verify` checks them against the tars): a shard holding fewer than it says would
    leave its rank short."""
    ranks = split_shards(shards, world, seed)
    even = min(sum(p["count"] for p in part) for part in ranks) * windows_per_clip
    mine = split_shards(ranks[rank], workers, seed)
    quotas = split_quota([sum(p["count"] for p in part) * windows_per_clip for part in mine], even)
    return mine[worker], quotas[worker]


class PoseWindows(IterableDataset):
    """Yields {"pose": (window, C) f32, "length": int, "speech": (window, D) f32, "text": (D,) f32, "key": str}.

    Clips shorter than `window` are padded with their last frame; "length" is the real frame count."""

    def __init__(self, manifest_path: str | Path, cfg: DataConfig = DataConfig(), *, every_rank: bool = False):
        super().__init__()
        self.every_rank = every_rank   # epoch mode: this process reads the whole manifest (evaluation on one rank)
        self.path, self.cfg = Path(manifest_path), resolve_features(manifest_path, cfg)
        manifest = load_manifest(self.path)
        self.shards = manifest["shards"]
        self.keys = {s["path"]: set(s["keys"]) if "keys" in s else None for s in self.shards}
        self.whole = {s["path"]: shard_piece(s) for s in self.shards}
        if not self.shards:
            raise ValueError(f"{manifest_path}: no shards")
        self.passes = 0

    def pipeline(self) -> wds.DataPipeline:
        """resample: an endless stream of whole shards drawn with replacement, seeded per rank and worker (no empty
        worker when shards < workers; draws are uniform over shards: webdataset's ResampledShards has no weights).
        Otherwise one epoch of this rank's and worker's share (`epoch_split`), the same window count on every rank."""
        cfg = self.cfg
        if cfg.resample:
            urls = [s["path"] for s in self.shards]
            return wds.DataPipeline(wds.ResampledShards(urls, seed=cfg.seed, deterministic=True, empty_check=False),
                                    self._whole_shards, self._read, self._windows)
        rank, world, worker, workers = wds.utils.pytorch_worker_info()   # torchrun's env, then the process group
        if self.every_rank:
            rank, world = 0, 1
        pieces, windows = epoch_split(self.shards, seed=cfg.seed, windows_per_clip=cfg.windows_per_clip,
                                      rank=rank, world=world, worker=worker, workers=workers)
        return wds.DataPipeline(functools.partial(iter, pieces), self._read, self._windows, wds.slice(windows))

    def _whole_shards(self, shards: Iterator[dict]) -> Iterator[dict]:
        return (self.whole[shard["url"]] for shard in shards)

    def _read(self, pieces: Iterator[dict]) -> Iterator[dict]:
        """Pieces -> decoded samples via the project's safe tar reader (no links, no absolute names)."""
        for piece in pieces:
            samples = safe_samples(open_shard(self.path.parent, piece["path"]), self.keys[piece["path"]])
            for key, sample in itertools.islice(samples, piece["start"], None, piece["step"]):
                yield {"key": key, **{name: _npy(data) for name, data in sample.items() if name.endswith(".npy")},
                       "text.json": json.loads(sample["text.json"]) if "text.json" in sample else None}

    def _member(self, sample: dict, stem: str) -> np.ndarray:
        if f"{stem}.npy" not in sample:
            raise KeyError(f"{sample['key']}: no {stem}.npy in the shard (run `posetalk-data extend` for it)")
        return sample[f"{stem}.npy"]

    def _windows(self, samples: Iterator[dict]) -> Iterator[dict]:
        cfg = self.cfg
        self.passes += 1
        rng = random.Random(_stream_seed(cfg.seed * 1_000_003 + self.passes))
        buf: list[dict] = []
        for sample in samples:
            pose, gaze = sample["pose.npy"], sample["gaze.npy"]
            speech = self._member(sample, cfg.speech) if cfg.speech else None
            text = self._member(sample, cfg.text) if cfg.text else None
            for _ in range(cfg.windows_per_clip):
                buf.append(self._cut(sample["key"], pose, gaze, speech, text, rng))
            while len(buf) >= cfg.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def _cut(self, key, pose, gaze, speech, text, rng) -> dict:
        w, t = self.cfg.window, len(pose)
        start = rng.randint(0, max(t - w, 0))
        idx = np.minimum(np.arange(start, start + w), t - 1)  # pad short clips with their last frame
        out = {"key": key, "length": min(w, t),
               "pose": torch.from_numpy(motion_features(pose[idx], gaze[idx], translation=self.cfg.translation))}
        if speech is not None:
            out["speech"] = torch.from_numpy(speech[np.minimum(idx, len(speech) - 1)].astype(np.float32))
        if text is not None:
            out["text"] = torch.from_numpy(text[rng.randrange(len(text))].astype(np.float32))
        return out

    def __iter__(self) -> Iterator[dict]:
        return iter(self.pipeline())


def loader(manifest_path: str | Path, cfg: DataConfig, *, batch_size: int, num_workers: int = 0,
           every_rank: bool = False, **kwargs) -> torch.utils.data.DataLoader:
    """DataLoader over PoseWindows; default collate stacks tensors and lists keys. every_rank: in epoch mode, read
    the whole manifest whatever this process's DDP rank (held-out figures computed on rank 0)."""
    dataset = PoseWindows(manifest_path, cfg, every_rank=every_rank)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       persistent_workers=num_workers > 0, **kwargs)
