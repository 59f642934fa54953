"""What every dataset adapter returns, and the few helpers they share.

An adapter's `scan(root, **options) -> SourceScan` reads the dataset's metadata and looks for its media on disk;
it never decodes video (at most an ffprobe per local file, `probe=True`). Every annotated clip that will not be
built, or will be built with less than its metadata promised, gets a `Problem` row with a reason a person can act on.
"""
from __future__ import annotations

import fnmatch
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .. import storage
from ..media import MediaError, ProbeInfo, probe
from ..schema import VideoSpec

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".webm", ".avi", ".m4v", ".flv", ".ts", ".wmv", ".3gp"}   # every source
AUDIO_SUFFIXES = {".m4a", ".wav", ".mp3", ".aac", ".flac", ".opus", ".ogg"}
END_SLACK_S = 0.5          # same tolerance as the probe stage: containers often end a few frames early


class SourceError(ValueError):
    """A dataset folder the adapter cannot use at all (no metadata, unknown layout): raised before any work."""


@dataclass(frozen=True)
class Problem:
    id: str                  # clip id (or video id / metadata file when the whole thing is affected)
    kind: str                # short code for grouping: no_media, no_crop, crop_outside, span_past_end, ...
    reason: str              # for people: what is wrong and what the build does about it
    kept: bool = False       # True: still built (e.g. without a crop hint); False: left out of the build

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "reason": self.reason, "kept": self.kept}


@dataclass(frozen=True)
class SourceScan:
    source: str
    root: Path
    metadata: list[str]              # metadata files read (relative to root where possible)
    clips: list[dict[str, Any]]      # every annotated clip the metadata describes, media or not (manifest rows)
    specs: list[VideoSpec]           # what a build would process: clips whose media is here and usable
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # file-level quirks found and survived (BOM, no final newline)
    sizes: dict[str, int] = field(default_factory=dict)   # source bytes by URL, when a store's listing gave them


class Tree:
    """The files under a dataset root on this disk or in an object store (s3://bucket/celebv), listed once (one
    walk, or one listing of the store), read through posetalk_data.storage. Paths are Paths on this disk and URL
    text in a store."""

    def __init__(self, root):
        self.root = storage.location(root)
        self.url = storage.is_url(self.root)
        if not self.url and not self.root.is_dir():
            raise SourceError(f"--root {root} is not a folder")
        self.files = storage.find(self.root)
        if self.url and not self.files:
            raise SourceError(f"--root {root} holds no files (or does not exist)")

    def path(self, rel: str):
        return storage.join(self.root, rel)

    def rel(self, path) -> str:
        """A path under the root as the listing names it (lexically: a linked file stays where it is linked)."""
        return (storage.relative_to(path, self.root) or str(path)) if self.url else rel(Path(path), self.root)

    def glob(self, pattern: str, folders: bool = False) -> list:
        """Path.glob over the listing (each part an fnmatch pattern): the files matching, or with folders=True the
        folders that do (those holding files: a store has no others)."""
        want = PurePosixPath(pattern).parts
        hits = set()
        for r in self.files:
            parts = PurePosixPath(r).parts
            deep_enough = len(parts) > len(want) if folders else len(parts) == len(want)
            if deep_enough and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, want)):
                hits.add("/".join(parts[:len(want)]))
        return [self.path(h) for h in sorted(hits)]

    def find(self, names: Iterable[str], what: str, max_depth: int = 3):
        """The first file matching one of `names` (glob patterns) at the root or up to `max_depth` folders below it.

        Raises SourceError naming every pattern looked for, so a user knows what the adapter expects.
        """
        names = list(names)
        for depth in range(max_depth + 1):
            for name in names:
                hits = self.glob("*/" * depth + name)
                if hits:
                    return hits[0]
        raise SourceError(f"no {what} found under {self.root}: looked for {', '.join(names)} at the top and up to "
                          f"{max_depth} folders below it")

    def has(self, path) -> bool:
        """Whether the listing holds this file (no request to the store)."""
        return self.rel(path) in self.files

    def under(self, folder) -> list[str]:
        """Every file under a folder (a path or URL under the root), at any depth, as a POSIX path relative to it."""
        prefix = self.rel(folder).rstrip("/") + "/"
        return [r[len(prefix):] for r in self.files if r.startswith(prefix)]

    def names_in(self, folder) -> list[str]:
        """File names directly in a folder (a path or URL under the root)."""
        return [r for r in self.under(folder) if "/" not in r]

    def media_index(self, suffixes: set[str]) -> dict[str, list]:
        """File stem -> files with one of `suffixes` anywhere under the root, in a top-down walk's order."""
        index: dict[str, list] = {}
        for r in sorted(self.files, key=walk_order):
            stem, suffix = os.path.splitext(PurePosixPath(r).name)
            if suffix.lower() in suffixes:
                index.setdefault(stem, []).append(self.path(r))
        return index

    def probe(self, paths: Iterable) -> dict:
        """ffprobe of the local files (see probe_many); a store's files are not downloaded here: the build's worker
        that fetches one probes it (spans past the end, a crop outside the frame are found there)."""
        return {} if self.url else probe_many(paths)

    def sizes(self) -> dict[str, int]:
        """Source bytes by URL when the root is a store (its listing gave them; a build reports them)."""
        return {self.path(r): size for r, size in self.files.items()} if self.url else {}


def walk_order(rel: str) -> list[tuple[int, str]]:
    """Sort key of a relative path in os.walk's top-down order (sorted folders): a folder's files before its
    subfolders, so the listing finds duplicate names in the order a walk of a local root does."""
    *folders, name = PurePosixPath(rel).parts
    return [(1, f) for f in folders] + [(0, name)]


def rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def probe_many(paths: Iterable[Path], workers: int = 8) -> dict[Path, ProbeInfo | str]:
    """ffprobe each file once (threads: each probe is a subprocess); a file ffprobe cannot read maps to its reason."""
    def one(path: Path) -> ProbeInfo | str:
        try:
            return probe(path)
        except MediaError as err:
            return str(err)

    unique = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(unique, pool.map(one, unique)))


def span_problem(start: float, end: float, duration: float) -> str | None:
    """Why [start, end) cannot be cut from a video of `duration` seconds, or None."""
    if start >= duration:
        return f"span {start:.2f}-{end:.2f} s starts after the video ends ({duration:.2f} s)"
    if end > duration + END_SLACK_S:
        return f"span {start:.2f}-{end:.2f} s ends past the video's end ({duration:.2f} s)"
    return None


def box_problem(box: list[float], width: float | None, height: float, slack: float = 1.0) -> str | None:
    """Why a [left, top, right, bottom] box does not fit a width x height frame (same units), or None.

    width None: only the height is known (HDTF declares heights only), so only rows are checked.
    """
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        return f"crop box {fmt_box(box)} is empty"
    outside_x = width is not None and (left < -slack or right > width + slack)
    if outside_x or top < -slack or bottom > height + slack:
        size = f"{width:g}x{height:g}" if width is not None else f"{height:g}-pixel-high"
        return f"crop box {fmt_box(box)} lies outside the {size} frame"
    return None


def fmt_box(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def crop_hint(box: list[float], units: str, frame: tuple[int, int] | None, origin: str) -> dict[str, Any]:
    """The crop hint kept in VideoSpec.extra: box = [left, top, right, bottom] of the source frame as displayed.

    units: "normalised" (0..1 of the frame) or "pixels" (of `frame` = [width, height]; width may be None when
    only the metadata's declared height is known).
    """
    nd = 4 if units == "normalised" else 1
    return {"box": [round(float(v), nd) for v in box], "units": units,
            "frame": list(frame) if frame else None, "origin": origin}
