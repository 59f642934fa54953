"""What every dataset adapter returns, and the few helpers they share.

An adapter's `scan(root, **options) -> SourceScan` reads the dataset's metadata and looks for its media on disk;
it never decodes video (at most an ffprobe per local file, `probe=True`). Every annotated clip that will not be
built, or will be built with less than its metadata promised, gets a `Problem` row with a reason a person can act on.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

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


def find_metadata(root: Path, names: Iterable[str], what: str, max_depth: int = 3) -> Path:
    """The first file matching one of `names` (glob patterns) at root or up to `max_depth` folders below it.

    Raises SourceError naming every pattern looked for, so a user knows what the adapter expects.
    """
    names = list(names)
    if not root.is_dir():
        raise SourceError(f"--root {root} is not a folder")
    for depth in range(max_depth + 1):
        for name in names:
            hits = sorted(root.glob("*/" * depth + name))
            if hits:
                return hits[0]
    looked = ", ".join(names)
    raise SourceError(f"no {what} found under {root}: looked for {looked} at the top and up to {max_depth} "
                      f"folders below it")


def rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def media_index(root: Path, suffixes: set[str]) -> dict[str, list[Path]]:
    """File stem -> files with one of `suffixes` anywhere under root (one directory walk, no decoding)."""
    index: dict[str, list[Path]] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in suffixes:
                index.setdefault(stem, []).append(Path(folder) / name)
    return index


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
