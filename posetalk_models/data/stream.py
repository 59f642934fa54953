"""The one way every trainer reads shards: a composed webdataset pipeline over a posetalk manifest.

    shards (resampled, or this rank's and worker's even share of one epoch) -> safe tar reader -> decode the members
    the model needs -> cut items from each clip (a per-model function) -> shuffle buffer

A model's data module supplies only `cut(sample, rng) -> [item, ...]` and the member names it reads; the pose models
cut windows of pose+gaze (posetalk_models.data.windows), the video models frames (posetalk_models.data.frames). Items are dicts
of tensors (stacked by the default collate) and strings (listed).
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from posetalk_data import storage
from posetalk_data.reading import (ManifestError, check_shards, load_manifest, manifest_location, open_shard,
                                   safe_samples, selection)


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle shard contents


def stream_seed(seed: int) -> int:
    """Distinct, reproducible seed per (seed, node, worker) so workers do not cut the same items."""
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
    """(pieces, items): what one DataLoader worker of one rank reads in an epoch and how many items it yields.

    Shards are dealt to ranks, then each rank's pieces to its workers (`split_shards`). Every rank yields the same
    number of items, the smallest rank's samples x items per clip, shared by its workers in proportion to what
    they read: DDP never waits on a rank that ran out. A rank's surplus items (the last ones out of its shuffle
    buffer) are dropped. Fewer samples than ranks gives every rank 0 items rather than a hang. The counts are the
    manifest's (`posetalk-data manifest verify` checks them against the tars): a shard holding fewer than it says
    would leave its rank short."""
    ranks = split_shards(shards, world, seed)
    even = min(sum(p["count"] for p in part) for part in ranks) * windows_per_clip
    mine = split_shards(ranks[rank], workers, seed)
    quotas = split_quota([sum(p["count"] for p in part) * windows_per_clip for part in mine], even)
    return mine[worker], quotas[worker]


# ------------------------------------------------------------------ the stream
Cut = Callable[[dict, random.Random], list[dict]]


@dataclass(frozen=True)
class ClipNeed:
    """The shortest clip a cut makes an item of, and what decides that: named when no clip is long enough."""
    frames: int
    item: str        # what is cut, e.g. "lip-sync item"
    settings: str    # the settings that make `frames`, e.g. "data.sync_frames + data.sync_offset_min + 1"
    fix: str         # e.g. "lower data.sync_offset_min"


class NoItems(ValueError):
    """The data cannot give one training item: training on it would wait forever."""


def check_long_enough(manifest_path: str | Path, need: ClipNeed) -> None:
    """NoItems, before any shard is read, when no clip the manifest selects has `need.frames` frames."""
    try:
        rows = [row for _, selected in selection(manifest_path)[2] for row in selected]
    except ManifestError:
        return      # no table to tell: the stream's own guard (ShardStream._barren) stops it
    longest = max(rows, key=lambda r: r["frames"], default=None)
    if longest is None or longest["frames"] >= need.frames:
        return
    fps = longest["frames"] / longest["duration"] if longest["duration"] else 25.0
    raise NoItems(f"{manifest_path}: no clip is long enough for one {need.item}: it needs {need.frames} frames "
                  f"({need.settings}; {need.frames / fps:.2f} s at {fps:g} fps), the longest of the {len(rows)} "
                  f"clips has {longest['frames']} ({longest['frames'] / fps:.2f} s); {need.fix}, or train on longer "
                  "clips")


class ShardStream(IterableDataset):
    """Items cut from the clips of a manifest. `members`: shard members to decode (.npy as arrays, .json as objects,
    anything else as bytes); `cut(sample, rng)`: the items of one decoded sample ({"key", member: value}).

    resample: an endless stream of whole shards drawn with replacement, seeded per rank and worker (no empty worker
    when shards < workers; draws are uniform over shards: webdataset's ResampledShards has no weights). Otherwise
    one epoch of this rank's and worker's share (`epoch_split`), the same item count on every rank; `every_rank`
    reads the whole manifest whatever the DDP rank (held-out figures on rank 0)."""

    def __init__(self, manifest_path: str | Path, members: set[str], cut: Cut, *, per_clip: int, shuffle_buffer: int,
                 resample: bool, seed: int, every_rank: bool = False, need: ClipNeed | None = None):
        super().__init__()
        # a Path, or the URL text of a manifest in a store: its shards are read from beside it, wherever that is
        self.path, self.members, self.cut = manifest_location(manifest_path), set(members), cut
        self.per_clip, self.shuffle_buffer, self.resample, self.seed = per_clip, shuffle_buffer, resample, seed
        self.every_rank, self.need = every_rank, need
        manifest = load_manifest(self.path)
        self.shards = manifest["shards"]
        if not self.shards:
            raise ValueError(f"{manifest_path}: no shards (an empty build or filter)")
        check_shards(self.path, manifest)     # a shard cut short would silently train on part of the data
        if need is not None:
            check_long_enough(self.path, need)
        self.keys = {s["path"]: set(s["keys"]) if "keys" in s else None for s in self.shards}
        self.whole = {s["path"]: shard_piece(s) for s in self.shards}
        self.clips = sum(p["count"] for p in self.whole.values())
        self.passes = 0

    def pipeline(self) -> wds.DataPipeline:
        if self.resample:
            urls = [s["path"] for s in self.shards]
            return wds.DataPipeline(wds.ResampledShards(urls, seed=self.seed, deterministic=True, empty_check=False),
                                    self._whole_shards, self._read, self._items)
        rank, world, worker, workers = wds.utils.pytorch_worker_info()   # torchrun's env, then the process group
        if self.every_rank:
            rank, world = 0, 1
        pieces, items = epoch_split(self.shards, seed=self.seed, windows_per_clip=self.per_clip, rank=rank,
                                    world=world, worker=worker, workers=workers)
        return wds.DataPipeline(functools.partial(iter, pieces), self._read, self._items, wds.slice(items))

    def _whole_shards(self, shards: Iterator[dict]) -> Iterator[dict]:
        return (self.whole[shard["url"]] for shard in shards)

    def _read(self, pieces: Iterator[dict]) -> Iterator[dict]:
        """Pieces -> decoded samples via the project's safe tar reader (no links, no absolute names)."""
        for piece in pieces:
            samples = safe_samples(open_shard(storage.parent(self.path), piece["path"]), self.keys[piece["path"]])
            for key, sample in itertools.islice(samples, piece["start"], None, piece["step"]):
                yield {"key": key, **{name: decode(name, data) for name, data in sample.items()
                                      if name in self.members}}

    def _items(self, samples: Iterator[dict]) -> Iterator[dict]:
        self.passes += 1
        rng = random.Random(stream_seed(self.seed * 1_000_003 + self.passes))
        buf: list[dict] = []
        barren: set[str] | None = set() if self.resample else None   # clips that gave no item, until one does
        for sample in samples:
            items = self.cut(sample, rng)
            if barren is not None:
                barren = self._barren(barren, sample["key"]) if not items else None
            buf += items
            while len(buf) >= self.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def _barren(self, barren: set[str], key: str) -> set[str]:
        """An endless stream in which every clip has given no item would wait forever: NoItems instead."""
        barren.add(key)
        if len(barren) >= self.clips:
            why = f" (a {self.need.item} needs {self.need.frames} frames: {self.need.settings})" if self.need else ""
            raise NoItems(f"{self.path}: none of its {self.clips} clips gives a training item{why}")
        return barren

    def __iter__(self) -> Iterator[dict]:
        return iter(self.pipeline())


def decode(name: str, data: bytes):
    if name.endswith(".npy"):
        return npy(data)
    if name.endswith(".json"):
        return json.loads(data)
    return data


def member(sample: dict, name: str):
    """A member a cut function needs; KeyError naming the fix when the shard lacks it."""
    if name not in sample:
        raise KeyError(f"{sample['key']}: no {name} in the shard (run `posetalk-data extend` for feature layers)")
    return sample[name]


def data_loader(dataset: IterableDataset, *, batch_size: int, num_workers: int = 0, **kwargs
                ) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       persistent_workers=num_workers > 0, **kwargs)
