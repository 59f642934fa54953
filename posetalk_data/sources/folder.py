"""Source adapter `folder`: every video file under a directory, one VideoSpec each."""
from __future__ import annotations

from pathlib import Path

from ..schema import VideoSpec
from .base import VIDEO_SUFFIXES


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


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
