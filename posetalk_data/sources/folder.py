"""Source adapter `folder`: every video file under a directory (or an object-store prefix), one VideoSpec each."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from .. import storage
from ..schema import VideoSpec
from .base import VIDEO_SUFFIXES


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def url_specs(root: str, source: str = "folder", exclude=None) -> tuple[list[VideoSpec], dict[str, int]]:
    """folder_specs for a URL prefix (s3://bucket/videos): one listing of the store, no download; also the
    sizes the listing gave, by URL."""
    listing = storage.find(root)
    if not listing:
        raise FileNotFoundError(f"input {root} holds no files (or does not exist)")
    skip = storage.relative_to(exclude, root) if exclude is not None and storage.is_url(exclude) else None
    specs, sizes = [], {}
    for rel, size in listing.items():
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).suffix.lower() not in VIDEO_SUFFIXES or ".staging" in parts \
                or (skip is not None and (skip == "" or rel.startswith(skip.rstrip("/") + "/"))):
            continue
        url = storage.join(root, rel)
        specs.append(VideoSpec(source=source, video_id=rel, path=url))
        sizes[url] = size
    return specs, sizes


def folder_specs(root: Path, source: str = "folder", exclude: Path | None = None) -> list[VideoSpec]:
    """Videos under `root` by suffix, sorted. The id is the path relative to root, suffix included, so x.mp4 and
    x.mov are two videos and an id never depends on which other files are there. Files under `exclude` (the build's
    own OUT when it lies inside the input) and under any `.staging` folder (another build's staged crops) are not
    inputs."""
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a directory")
    skip = exclude.resolve() if exclude is not None else None
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                   and ".staging" not in p.relative_to(root).parts and not (skip and _inside(p.resolve(), skip)))
    return [VideoSpec(source=source, video_id=p.relative_to(root).as_posix(), path=str(p)) for p in files]
