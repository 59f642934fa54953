"""`posetalk-data build` as an importable function: plan, check, run (resuming), stage, write, summarise."""
from __future__ import annotations

import importlib
import json
import platform
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__
from .config import PipelineConfig, output_settings
from .media import ffmpeg_version, require_ffmpeg
from .pipeline import VideoProcessor, check_wiring, describe
from .report import write_report
from .runner import WorkerPool, default_workers
from .schema import SCHEMA_VERSION, VIDEO_FPS, VideoSpec
from .storage import write_json
from .shards import STAGING_DIR, Staging, is_staging, relative_source, write_outputs

PACKAGES = ("numpy", "mediapipe", "opencv-contrib-python", "scipy", "webdataset", "pyarrow", "ray",
            "face-alignment", "torch")


@dataclass
class BuildResult:
    out: Path
    kept: int = 0                 # clips kept / dropped by this run (resumed videos not counted)
    dropped: int = 0
    frames: int = 0
    resumed: int = 0              # videos already done by an earlier run of the same build
    seconds: float = 0.0
    stage_seconds: Counter = field(default_factory=Counter)   # worker time per stage, this run
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


def import_in_background(*modules: str) -> None:
    """Import what the end of a build needs while Ray starts and the workers run, when this process is idle
    (webdataset, for the shards, pulls in torch: 1.5 s)."""
    threading.Thread(target=lambda: [importlib.import_module(m) for m in modules], daemon=True).start()


def preflight(processor: VideoProcessor) -> None:
    """Fail in a second, before Ray starts, on what would fail every clip: tools and weights."""
    require_ffmpeg()
    check_wiring(processor.stages)
    for stage in processor.stages:
        check = getattr(stage, "check", None)
        if check:
            check()


class OutDirError(ValueError):
    """OUT cannot take this build (a file, or a folder of someone else's files)."""


def is_build_dir(out: Path) -> bool:
    """OUT holds a posetalk build: its manifest, or the staging of an unfinished one (even one killed while it was
    starting)."""
    if is_staging(out / STAGING_DIR):
        return True
    try:
        return json.loads((out / "manifest.json").read_text()).get("format") == "posetalk-shards"
    except (OSError, ValueError, AttributeError):
        return False


def check_out_dir(out: Path, allow: tuple[Path, ...] = ()) -> None:
    """A build writes into a new or empty folder, or resumes/redoes an earlier build of the same folder. A folder
    holding other files is refused: a build never removes or overwrites what it did not write. `allow`: paths
    inside OUT this run made itself (the demo source's videos)."""
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out} is a file; give a folder for the shards, manifest and tables")
    if not out.is_dir() or is_build_dir(out):
        return
    allowed = {p.resolve() for p in allow}
    foreign = sorted(p.name for p in out.iterdir() if p.resolve() not in allowed)
    if foreign:
        raise OutDirError(f"--out {out} already holds files that are not a posetalk build ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder (nothing was changed)")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]videos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[rate]}"), console=console)


def build(specs: list[VideoSpec], out: Path, cfg: PipelineConfig, *, source: str, root: Path | None,
          workers: int | None = None, address: str | None = None, fresh: bool = False, retry_failed: bool = False,
          skipped: list[dict] = (), console: Console | None = None,
          processor: VideoProcessor | None = None) -> BuildResult:
    """Build (or resume building) OUT from the videos; a killed build rerun with the same arguments redoes only
    the videos it had not finished and ends with the same manifest and shards as an uninterrupted one.
    `skipped` are failure rows for clips the source adapter left out (they count as dropped); `processor`: one the
    caller built and preflighted already (the CLI does, before the source plan)."""
    console = console or Console(stderr=True)
    check_out_dir(out, allow=(root,) if root is not None else ())
    if processor is None:
        processor = VideoProcessor(cfg)
        preflight(processor)
    console.print(describe(processor.stages))
    if fresh and is_staging(out / STAGING_DIR):   # only a staging this tool made
        shutil.rmtree(out / STAGING_DIR)
    started = time.perf_counter()
    import_in_background("webdataset")
    fingerprint = {"schema_version": SCHEMA_VERSION, "pipeline": output_settings(cfg)}
    staging = Staging(out)
    staging.check_fingerprint(fingerprint, partial=True)     # a changed config: refused before any work
    if retry_failed:
        console.print(f"--retry-failed: {staging.forget_failed()} video(s) with failures will be processed again")
    todo = [s for s in specs if not staging.done(s)]
    result = BuildResult(out=out, resumed=len(specs) - len(todo), dropped=len(skipped))
    result.reasons.update(f"source: {row['reason']}" for row in skipped)
    if result.resumed:
        console.print(f"resuming: {result.resumed} of {len(specs)} videos were finished by an earlier run")
    workers = default_workers(address) if workers is None else workers
    pool = WorkerPool(cfg, workers=workers, address=address, videos=max(len(todo), 1),   # models load from here
                      processor=processor)
    try:
        pool.start(todo)                        # the videos go to the workers at once ...
        versions = {**package_versions(), **pool.versions()}   # ... while the model workers report their versions
        staging.check_fingerprint({**fingerprint, "versions": versions})
        if todo:
            _run(len(todo), pool, staging, root, result, console=console, started=started)
    except BaseException:
        pool.close()
        raise
    pool.close(wait=False)      # a Ray the pool started ends in the background while the shards are written
    try:
        sources = [{"video_id": s.video_id, "path": relative_source(s.path, root), "abs_path": s.path,
                    "bytes": Path(s.path).stat().st_size if Path(s.path).is_file() else None,
                    **({"start": s.start, "end": s.end} if s.start is not None else {})} for s in specs]
        header = {"source": source, "pipeline": cfg.model_dump(mode="json"), "versions": versions}
        result.manifest = write_outputs(staging, specs, out, per_shard=cfg.write.samples_per_shard, root=root,
                                        sources=sources, header=header, layers=processor.layers(), skipped=skipped)
        result.seconds = time.perf_counter() - started
        write_timings(out, result)
        write_report(out)
    finally:
        pool.wait_closed()
    return result


def write_timings(out: Path, result: BuildResult) -> None:
    """This run's worker time per stage, beside (not in) the manifest, which must not depend on timing."""
    timings = {**result.stage_seconds, "frames": result.frames, "wall_seconds": round(result.seconds, 3)}
    write_json(out / "timings.json", timings, sort_keys=False)


def _run(videos: int, pool: WorkerPool, staging: Staging, root: Path | None, result: BuildResult, *,
         console: Console, started: float) -> None:
    nodes = pool.nodes()
    if nodes:
        console.print(f"{len(nodes)} workers on {len(set(nodes))} Ray node(s)")
    with _progress(console) as bar:
        task = bar.add_task("build", total=videos, rate="")
        for done, (spec, video) in enumerate(pool.results(), 1):
            staging.put_video(spec, video.records, root)
            result.stage_seconds.update(video.seconds)
            for record in video.records:
                if record.meta.get("unit") == "span":   # frames no clip holds: listed, but no clip was dropped
                    continue
                if record.ok:
                    result.kept += 1
                    result.frames += round((record.end - record.start) * VIDEO_FPS)
                else:
                    result.dropped += 1
                    stage, reason = next(iter(record.errors.items()))
                    result.reasons[f"{stage}: {reason}"] += 1
            elapsed = max(time.perf_counter() - started, 1e-6)
            bar.update(task, advance=1, rate=f"{done / elapsed:.2f} videos/s  {result.kept / elapsed:.2f} clips/s  "
                                             f"{result.frames / elapsed:.1f} frames/s  kept {result.kept}  "
                                             f"dropped {result.dropped}")
