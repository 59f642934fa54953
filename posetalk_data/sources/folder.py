"""Source adapter `folder`: every video file under a directory, one VideoSpec each."""
from __future__ import annotations

from pathlib import Path

from ..schema import VideoSpec

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".webm", ".avi", ".m4v", ".flv", ".ts", ".wmv", ".3gp"}


def folder_specs(root: Path, source: str = "folder") -> list[VideoSpec]:
    """Videos under `root` by suffix, sorted; the id is the path relative to root without its suffix."""
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return [VideoSpec(source=source, video_id=p.relative_to(root).with_suffix("").as_posix(), path=str(p))
            for p in files]
