"""Source adapters: each turns a dataset (or folder) into a list of VideoSpecs, plus what it could not use."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import storage
from ..schema import VideoSpec

SOURCES = ("folder", "demo", "hdtf", "celebv-text", "mead")
DATASETS = {"hdtf": "hdtf", "celebv-text": "celebv_text", "mead": "mead"}   # --src -> module


@dataclass
class SourcePlan:
    specs: list[VideoSpec]
    root: Path | str                    # the folder (or URL) source paths are stored relative to
    skipped: list[dict] = field(default_factory=list)   # failure rows (stage "source") for clips left out
    sizes: dict[str, int] = field(default_factory=dict)  # source bytes by path, when a store's listing gave them


def dataset_module(src: str):
    import importlib

    return importlib.import_module(f"{__name__}.{DATASETS[src]}")


def source_plan(src: str, input_dir, out, **options) -> SourcePlan:
    """What a build of `src` processes. `input_dir` is --input for folder (and demo), --root for datasets; a URL
    (s3://bucket/videos) for the folder source and the datasets (one listing; the workers fetch their videos)."""
    out = storage.location(out)
    if src == "folder":
        if input_dir is None:
            raise ValueError("--src folder needs --input DIR (the folder of videos)")
        from .folder import folder_specs, url_specs

        if storage.is_url(input_dir):
            specs, sizes = url_specs(storage.location(input_dir), exclude=out)
            return SourcePlan(specs, storage.location(input_dir), sizes=sizes)
        input_dir = storage.local(input_dir)
        return SourcePlan(folder_specs(input_dir, exclude=None if storage.is_url(out) else Path(out)), input_dir)
    if src == "demo" and input_dir is not None and storage.is_url(input_dir):
        raise ValueError(f"--src demo makes its videos in a local folder; {input_dir} is a URL (give a folder, or "
                         "build videos in a store with --src folder --input URL)")
    if src == "demo" and input_dir is None and storage.is_url(out):
        raise ValueError("--src demo makes its videos inside --out, which must then be a folder; give --input DIR "
                         "for the videos when --out is a URL")
    input_dir = None if input_dir is None else storage.location(input_dir)
    if src == "demo":
        from .demo import make_demo_clips

        root = input_dir or out / "demo_videos"
        return SourcePlan([VideoSpec(source="demo", video_id=c.name, path=str(c.video),
                                     extra={"ground_truth_pose": c.pose.relative_to(root).as_posix()})
                           for c in make_demo_clips(root)], root)
    if src in DATASETS:
        if input_dir is None:
            raise ValueError(f"--src {src} needs --root DIR (the dataset folder with its metadata and media)")
        scan = dataset_module(src).scan(input_dir, **options)
        skipped = [{"source": src, "video_id": p.id, "source_path": "", "start": None, "end": None,
                    "stage": "source", "reason": p.reason, "kind": "clip"} for p in scan.problems if not p.kept]
        return SourcePlan(scan.specs, scan.root, skipped, scan.sizes)
    raise ValueError(f"unknown source {src!r}; choose one of {', '.join(SOURCES)}")


def source_specs(src: str, input_dir: Path | None, out: Path, **options) -> tuple[list[VideoSpec], Path]:
    plan = source_plan(src, input_dir, out, **options)
    return plan.specs, plan.root
