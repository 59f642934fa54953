"""Source adapters: each turns a dataset (or folder) into a list of VideoSpecs."""
from __future__ import annotations

from pathlib import Path

from ..schema import VideoSpec

SOURCES = ("folder", "demo")


def source_specs(src: str, input_dir: Path | None, out: Path) -> tuple[list[VideoSpec], Path]:
    """(specs, root) for a source; root is the folder source paths are stored relative to."""
    if src == "folder":
        if input_dir is None:
            raise ValueError("--src folder needs --input DIR (the folder of videos)")
        from .folder import folder_specs

        return folder_specs(input_dir), input_dir
    if src == "demo":
        from .demo import make_demo_clips

        root = input_dir or out / "demo_videos"
        clips = make_demo_clips(root)
        return [VideoSpec(source="demo", video_id=c.name, path=str(c.video),
                          extra={"ground_truth_pose": c.pose.relative_to(root).as_posix()}) for c in clips], root
    raise ValueError(f"unknown source {src!r}; choose one of {', '.join(SOURCES)}")
