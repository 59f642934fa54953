"""`posetalk-data build` as an importable function: plan, check, run, stage, write, summarise."""
from __future__ import annotations

import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__
from .config import PipelineConfig
from .media import ffmpeg_version, require_ffmpeg
from .pipeline import VideoProcessor, check_wiring, describe
from .runner import default_workers, run_videos
from .schema import VIDEO_FPS, VideoSpec
from .shards import Staging, relative_source, write_outputs

PACKAGES = ("numpy", "mediapipe", "opencv-contrib-python", "scipy", "webdataset", "pyarrow", "ray",
            "face-alignment", "torch")


@dataclass
class BuildResult:
    out: Path
    kept: int = 0
    dropped: int = 0
    frames: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    manifest: dict = field(default_factory=dict)


def package_versions() -> dict[str, str]:
    out = {"posetalk": __version__, "python": platform.python_version(), "ffmpeg": ffmpeg_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def preflight(processor: VideoProcessor) -> None:
    """Fail in a second, before Ray starts, on what would fail every clip: tools and weights."""
    require_ffmpeg()
    check_wiring(processor.stages)
    for stage in processor.stages:
        check = getattr(stage, "check", None)
        if check:
            check()


def build(specs: list[VideoSpec], out: Path, cfg: PipelineConfig, *, source: str, root: Path | None,
          workers: int | None = None, address: str | None = None, console: Console | None = None) -> BuildResult:
    console = console or Console(stderr=True)
    processor = VideoProcessor(cfg)
    preflight(processor)
    console.print(describe(processor.stages))
    out.mkdir(parents=True, exist_ok=True)
    staging = Staging(out)
    workers = default_workers(address) if workers is None else workers
    result = BuildResult(out=out)
    started = time.perf_counter()
    columns = (TextColumn("[bold]videos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("build", total=len(specs), rate="")
        placed = lambda nodes: console.print(f"{len(nodes)} workers on {len(set(nodes))} Ray node(s)")
        for spec, records in run_videos(specs, cfg, workers=workers, address=address, on_start=placed):
            for record in records:
                staging.put(record, root)
                if record.ok:
                    result.kept += 1
                    result.frames += round((record.end - record.start) * VIDEO_FPS)
                else:
                    result.dropped += 1
                    result.reasons[f"{next(iter(record.errors))}: {next(iter(record.errors.values()))}"] += 1
            elapsed = max(time.perf_counter() - started, 1e-6)
            done = bar.tasks[0].completed + 1
            bar.update(task, advance=1, rate=f"{done / elapsed:.2f} videos/s  {result.kept / elapsed:.2f} clips/s  "
                                             f"{result.frames / elapsed:.1f} frames/s  kept {result.kept}  "
                                             f"dropped {result.dropped}")
    sources = [{"video_id": s.video_id, "path": relative_source(s.path, root), "abs_path": s.path,
                "bytes": Path(s.path).stat().st_size if Path(s.path).is_file() else None,
                **({"start": s.start, "end": s.end} if s.start is not None else {})} for s in specs]
    header = {"source": source, "pipeline": cfg.model_dump(mode="json"),
              "versions": {**package_versions(), **processor.versions()}}
    result.manifest = write_outputs(staging, out, per_shard=cfg.write.samples_per_shard, root=root,
                                    sources=sources, header=header)
    result.seconds = time.perf_counter() - started
    return result
