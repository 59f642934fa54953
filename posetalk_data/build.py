"""`posetalk-data build` as an importable function: plan, check, run (resuming), stage, write, summarise."""
from __future__ import annotations

import importlib
import os
import platform
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__, storage
from .config import PipelineConfig, output_settings
from .media import ffmpeg_version, require_ffmpeg
from .pipeline import VideoProcessor, check_wiring, describe
from .ray_start import default_workers
from .runner import WorkerPool
from .schema import SCHEMA_VERSION, VideoSpec
from .shards import STAGING_DIR, Staging, is_staging, plan_groups, relative_source, write_group, write_outputs

STARTUP_STAGE = "facetrack"     # start-up ends when the first video reaches face tracking (past its probe and audio)
PACKAGES = ("numpy", "mediapipe", "opencv-contrib-python", "scipy", "webdataset", "pyarrow", "ray",
            "face-alignment", "torch")


@dataclass
class BuildResult:
    out: "Path | str"             # a folder, or a URL of an object store
    kept: int = 0                 # clips kept / dropped by this run (resumed videos not counted)
    dropped: int = 0
    frames: int = 0
    resumed: int = 0              # videos already done by an earlier run of the same build
    seconds: float = 0.0
    startup: float | None = None  # seconds from the command (or the build() call) to the first video's STARTUP_STAGE
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


def process_started() -> float:
    """When this process started, on time.time()'s scale: a command's start-up includes the interpreter and the
    imports before any code of ours runs. Linux: /proc/self/stat's start (clock ticks since boot); elsewhere now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()
    return time.time() - age


def import_in_background(*modules: str, after: Callable[[], None] = lambda: None) -> None:
    """Import what the end of a build needs while the workers run, when this process is idle (webdataset, for
    the shards, pulls in torch: 1.5 s), once `after()` returns."""
    threading.Thread(target=lambda: [after(), *(importlib.import_module(m) for m in modules)], daemon=True).start()


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


def is_build_dir(out) -> bool:
    """OUT holds a posetalk build: its manifest, or the staging of an unfinished one (even one killed while it was
    starting)."""
    if is_staging(storage.join(out, STAGING_DIR)):
        return True
    try:
        return storage.read_json(storage.join(out, "manifest.json")).get("format") == "posetalk-shards"
    except (OSError, ValueError, AttributeError):
        return False


def check_out_dir(out, allow: tuple[Path, ...] = ()) -> None:
    """A build writes into a new or empty folder (or URL prefix), or resumes/redoes an earlier build of the same
    one. A folder holding other files is refused: a build never removes or overwrites what it did not write.
    `allow`: paths inside OUT this run made itself (the demo source's videos)."""
    if storage.is_file(out):
        raise OutDirError(f"--out {out} is a file; give a folder for the shards, manifest and tables")
    if not storage.is_dir(out) or is_build_dir(out):
        return
    allowed = {storage.name(p) for p in allow if storage.relative_to(p, out) == storage.name(p)}
    foreign = [name for name in storage.listdir(out) if name not in allowed]
    if foreign:
        raise OutDirError(f"--out {out} already holds files that are not a posetalk build ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder (nothing was changed)")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]videos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[rate]}"), console=console)


def source_bytes(spec: VideoSpec, sizes: dict[str, int] | None) -> int | None:
    """A source's size: from the source's listing when it gave one (one listing, not a request per video)."""
    if sizes and spec.path in sizes:
        return sizes[spec.path]
    if storage.is_url(spec.path):
        return None
    return Path(spec.path).stat().st_size if Path(spec.path).is_file() else None


def recorded_config(cfg: PipelineConfig) -> dict:
    """The config as the manifest records it: everything but how the store was reached (storage)."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k != "storage"}


def build(specs: list[VideoSpec], out, cfg: PipelineConfig, *, source: str, root, workers: int | None = None,
          address: str | None = None, fresh: bool = False, retry_failed: bool = False, skipped: list[dict] = (),
          console: Console | None = None, processor: VideoProcessor | None = None,
          sizes: dict[str, int] | None = None, started_at: float | None = None) -> BuildResult:
    """Build (or resume building) OUT (a folder or a store URL) from the videos; a killed build rerun with the same
    arguments redoes only the shard groups it had not finished and ends with the same manifest and shards as an
    uninterrupted one. `skipped` are failure rows for clips the source adapter left out (they count as dropped);
    `processor`: one the caller built and preflighted already (the CLI does, before the source plan); `sizes`:
    source bytes by path, when the source's listing gave them; `started_at`: when the command started (time.time();
    default: now), from which the start-up is measured."""
    started_at = time.time() if started_at is None else started_at
    console = console or Console(stderr=True)
    out = storage.location(out)
    storage.configure(cfg.storage.options)
    check_out_dir(out, allow=(root,) if root is not None else ())
    if processor is None:
        processor = VideoProcessor(cfg)
        preflight(processor)
    console.print(describe(processor.stages))
    if fresh and is_staging(storage.join(out, STAGING_DIR)):   # only a staging this tool made
        storage.remove(storage.join(out, STAGING_DIR), recursive=True)
    started = time.perf_counter()
    fingerprint = {"schema_version": SCHEMA_VERSION, "pipeline": output_settings(cfg)}
    staging = Staging(out)
    staging.check_fingerprint(fingerprint, partial=True)     # a changed config: refused before any work
    if retry_failed:
        console.print(f"--retry-failed: {staging.forget_failed()} video(s) with failures will be processed again")
    groups = plan_groups(specs, cfg.write.videos_per_shard)
    todo = [g for g in groups if not staging.done(g)]
    videos = sum(len(g.specs) for g in todo)
    result = BuildResult(out=out, resumed=len(specs) - videos, dropped=len(skipped))
    result.reasons.update(f"source: {row['reason']}" for row in skipped)
    if result.resumed:
        console.print(f"resuming: {result.resumed} of {len(specs)} videos were finished by an earlier run")
    workers = default_workers(address) if workers is None else workers
    pool = WorkerPool(cfg, workers=workers, address=address, videos=max(videos, 1),   # models load from here
                      processor=processor)
    # what the end of the build imports, while the videos run: the report's matplotlib and what it reads the tables
    # with (pyarrow.dataset, which pulls in pandas: 0.3 s); in-process, webdataset for the shards. After Ray's start,
    # which an import in this process would slow (ray.init waits on its GIL), and after the video workers' setup,
    # whose CPUs its 0.7 CPU s would share (the first video began 0.5 s later). Not decord: its import in a thread
    # crashed the process (segfault) beside the probe's PyAV.
    import_in_background(f"{__package__}.report", "pyarrow.dataset", *(["webdataset"] if workers == 0 else []),
                         after=pool.wait_ready)
    written: dict[int, dict] = {}
    versions: dict[str, str] = {}

    def check_versions() -> None:
        """Before the first shard is written (the model workers have loaded their models by then, while the videos
        went ahead): staged clips of other model versions are never mixed in."""
        versions.update({**package_versions(), **pool.versions()})
        staging.check_fingerprint({**fingerprint, "versions": versions})

    try:
        pool.start(todo, partial(write_group, out, root), before_writing=check_versions)  # the videos go out at once
        if todo:
            written = _run(videos, pool, result, console=console, started=started, started_at=started_at)
        if not versions:    # nothing written by this run: the versions for the manifest, checked all the same
            check_versions()
    except BaseException:
        pool.close()
        raise
    pool.close(wait=False)      # a Ray the pool started ends in the background while the tables are written
    try:
        sources = [{"video_id": s.video_id, "path": relative_source(s.path, root), "abs_path": s.path,
                    "bytes": source_bytes(s, sizes),
                    **({"start": s.start, "end": s.end} if s.start is not None else {})} for s in specs]
        header = {"source": source, "pipeline": recorded_config(cfg), "versions": versions}
        records = [written[g.index] if g.index in written else staging.record(g) for g in groups]
        result.manifest = write_outputs(records, out, sources=sources, header=header, members=processor.members(),
                                        skipped=skipped)
        result.seconds = time.perf_counter() - started
        write_timings(out, result)
        from .report import write_report

        write_report(out)
    finally:
        pool.wait_closed()
    return result


def write_timings(out, result: BuildResult) -> None:
    """This run's worker time per stage, beside (not in) the manifest, which must not depend on timing."""
    timings = {**result.stage_seconds, "frames": result.frames, "wall_seconds": round(result.seconds, 3),
               **({"startup_seconds": round(result.startup, 3)} if result.startup is not None else {})}
    storage.write_json(storage.join(out, "timings.json"), timings, sort_keys=False)


def _run(videos: int, pool: WorkerPool, result: BuildResult, *, console: Console, started: float,
         started_at: float) -> dict[int, dict]:
    """Follow the workers: progress per video, the start-up (to the earliest STARTUP_STAGE a worker began), and
    the records of the groups written (by group number)."""
    nodes = pool.nodes()
    if nodes:
        console.print(f"{len(nodes)} workers on {len(set(nodes))} Ray node(s)")
    written: dict[int, dict] = {}
    with _progress(console) as bar:
        task = bar.add_task("build", total=videos, rate="")
        done = 0
        for kind, event in pool.results():
            if kind == "group":
                group, record = event
                written[group.index] = record
                continue
            spec, summary = event
            done += 1
            result.stage_seconds.update(summary.seconds)
            if STARTUP_STAGE in summary.began:      # workers' clocks: on a cluster, as good as the nodes' sync
                first = summary.began[STARTUP_STAGE] - started_at
                result.startup = first if result.startup is None else min(result.startup, first)
            for clip in summary.clips:
                if clip["unit"] == "span":   # frames no clip holds: listed, but no clip was dropped
                    continue
                if clip["ok"]:
                    result.kept += 1
                    result.frames += clip["frames"]
                else:
                    result.dropped += 1
                    result.reasons[clip["error"]] += 1
            elapsed = max(time.perf_counter() - started, 1e-6)
            bar.update(task, advance=1, rate=f"{done / elapsed:.2f} videos/s  {result.kept / elapsed:.2f} clips/s  "
                                             f"{result.frames / elapsed:.1f} frames/s  kept {result.kept}  "
                                             f"dropped {result.dropped}")
    return written
