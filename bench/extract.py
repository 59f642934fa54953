"""Build throughput against a sequential script and the machine's limit, as whole processes, in one run.

On the clips of ../shared/samples/videos (or --input), each command timed as a whole process (start-up included),
median of --repeat runs:

limit      : decode at 25 fps + MediaPipe FaceMesh alone, one process per clip, as many at once as there are
             cores: the work that cannot be avoided
floor      : the limit plus what a build must add to it: a square crop cut from each frame and encoded as the
             clip's H.264 video (512 px, the build's x264 settings, through the build's own writer)
script     : the sequential one-file script a researcher writes: ffmpeg -> PNG files -> FaceMesh per frame,
             clip after clip, in one process
build      : `posetalk-data build --src folder --profile offline` (Ray, one worker per core)

Then the steady state: the same clips linked again and again to at least --steady-min minutes of video (median of
--repeat runs too), limit, floor and build in frames/s as whole processes, and the build's marginal rate (extra
frames over extra seconds between the sample run and the steady run: the build's one-off start-up and report taken
out; the limit starts a process per clip, so its rate has no one-off part). And the peak memory of one worker on the
longest clip and on a clip twice as long, with the default frame cache (bounded by facetrack.frame_cache_mb) and
without it. Ratios last: build / script time (target <= 0.5) and build / limit throughput in the steady state
(target >= 0.75).

Every run also measures sources of every shape people have (issue 22): a varied set made from the samples at run
time by ffmpeg in a temporary folder (`varied_set`: 1080p/30 fps H.264, 720p H.264, 360p MPEG-4 Part 2, short
2-3 s cuts; the samples themselves are the 512 px shape). Per shape: limit, script and build as whole processes
(targets: build >= 2x the script, >= 0.6 of the limit), and the build's worker time per stage in ms a frame
(timings.json) against the limit's CPU ms a frame; then every shape's clips in one build, as a user builds a mixed
dataset (`--whole-set-only`: just that), where the targets are judged: a shape of a few hundred frames measures
mostly the build's fixed start and end. `--set-name quick` makes one short clip per shape and one run
of each command (a check that the bench works, not a measurement); `--cpu-only` skips the whole-process runs and
gives each shape's in-process CPU ms a frame per stage (one worker, one process, time.process_time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples" / "videos"
PYTHON = sys.executable

LIMIT = """
import sys, mediapipe as mp
from posetalk_data.media import read_frames
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
n = 0
for frame in read_frames(sys.argv[1], fps=25):
    mesh.process(frame)
    n += 1
print(n)
"""
CPU = """
import resource, sys

def cpu():   # seconds of CPU of this process and of its finished children (an ffmpeg decoder)
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
"""

LIMIT_CPU = CPU + """
import mediapipe as mp
from posetalk_data.media import read_frames
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
started, n = cpu(), 0
for frame in read_frames(sys.argv[1], fps=25):
    mesh.process(frame)
    n += 1
print(n, (cpu() - started) * 1000)
"""

STAGES_CPU = CPU + """
import json, shutil, tempfile
from pathlib import Path
from posetalk_data.config import load_config
from posetalk_data.pipeline import VideoProcessor
from posetalk_data.schema import ClipRecord, VideoSpec
processor = VideoProcessor(load_config(None, sys.argv[2:]), part="video")
processor.setup()
for _ in range(2):   # the second run is measured: a worker's one-off costs (lazy imports, graph set-up) left out
    workdir = Path(tempfile.mkdtemp())
    records, seconds = [ClipRecord(spec=VideoSpec("folder", "x", sys.argv[1]), workdir=workdir)], {}
    for stage in processor.stages:
        started = cpu()
        records = stage.process_batch(records)
        seconds[stage.name] = cpu() - started
    shutil.rmtree(workdir)
frames = sum(len(r.arrays["crop_box"]) for r in records if r.ok)
print(json.dumps({"frames": frames, "ms": seconds, "errors": [r.errors for r in records if not r.ok
                                                              and r.meta.get("unit") != "span"]}))
"""

FLOOR = """
import sys, cv2, mediapipe as mp
from posetalk_data.media import VideoWriter, read_frames
from posetalk_data.tracking import cut_square
cv2.setNumThreads(1)   # as the build's workers: one process per core
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
n = 0
with VideoWriter(sys.argv[2], width=512, height=512, fps=25, crf=18, preset="superfast", keyframe_every=25) as out:
    for frame in read_frames(sys.argv[1], fps=25):
        mesh.process(frame)
        h, w = frame.shape[:2]
        out.write(cut_square(frame, w / 2, h / 2, 0.8 * min(h, w), 512)[0])
        n += 1
print(n)
"""

SCRIPT = """
import glob, os, subprocess, sys, tempfile
import cv2, mediapipe as mp, numpy as np
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
total = 0
for video in sys.argv[1:]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", video, "-vf", "fps=25",
                        os.path.join(tmp, "%06d.png")], check=True)
        points = []
        for name in sorted(glob.glob(os.path.join(tmp, "*.png"))):
            found = mesh.process(cv2.cvtColor(cv2.imread(name), cv2.COLOR_BGR2RGB)).multi_face_landmarks
            points.append([(p.x, p.y, p.z) for p in found[0].landmark] if found else None)
        total += len(points)
        np.save(os.path.join(tmp, "landmarks.npy"), np.array([p for p in points if p is not None]))
print(total)
"""


# shape -> (sample, ffmpeg output options, seconds or None for all of it); the 512 px samples are their own shape
SHAPES = {
    "1080p30 h264": [("liveportrait_d10.mp4", ["-vf", "scale=-2:1080,pad=1920:1080:(ow-iw)/2:0,fps=30",
                                               "-c:v", "libx264", "-preset", "veryfast", "-crf", "20"], None),
                     ("sadtalker_WDA_AlexandriaOcasioCortez_000.mp4",
                      ["-vf", "scale=-2:1080,pad=1920:1080:(ow-iw)/2:0,fps=30", "-c:v", "libx264", "-preset",
                       "veryfast", "-crf", "20"], None)],
    "720p h264": [("liveportrait_d11.mp4", ["-vf", "scale=-2:720,pad=1280:720:(ow-iw)/2:0", "-c:v", "libx264",
                                            "-preset", "veryfast", "-crf", "20"], None),
                  ("videoretalking_face_2.mp4", ["-vf", "scale=-2:720,pad=1280:720:(ow-iw)/2:0", "-c:v", "libx264",
                                                 "-preset", "veryfast", "-crf", "20"], None)],
    "360p mpeg4": [(name, ["-vf", "scale=-2:360,pad=640:360:(ow-iw)/2:0", "-c:v", "mpeg4", "-q:v", "4"], None)
                   for name in ("liveportrait_d20.mp4", "liveportrait_d11.mp4")],
    # starts within every sample's length (videoretalking_face_2 is 5 s: a start at 5 s made a clip of no video)
    "2-3 s cuts": [(name, ["-ss", f"{0.5 + i / 2}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20"], 2 + i / 4)
                   for i, name in enumerate(("liveportrait_d10.mp4", "liveportrait_d11.mp4", "liveportrait_d20.mp4",
                                             "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4",
                                             "videoretalking_face_2.mp4"))],
}


def varied_set(samples: Path, root: Path, quick: bool) -> dict[str, list[Path]]:
    """shape -> clips: the samples and the varied shapes made from them by ffmpeg under `root`.
    quick: one clip per shape, at most 4 s."""
    out = {"samples": sorted(p for p in samples.iterdir() if p.is_file())[: 1 if quick else None]}
    for shape, recipes in SHAPES.items():
        folder = root / shape.replace(" ", "_")
        folder.mkdir(parents=True)
        for name, options, seconds in recipes[:1] if quick else recipes:
            seconds = min(seconds or 4.0, 4.0) if quick else seconds
            clip = folder / f"{Path(name).stem}.{'avi' if 'mpeg4' in options else 'mp4'}"   # old material: AVI
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(samples / name), *options,
                            *(["-t", f"{seconds}"] if seconds else []), "-c:a", "aac" if clip.suffix == ".mp4"
                            else "mp3", str(clip)], check=True)
        out[shape] = sorted(folder.iterdir())
    return out


def stage_cpu(paths: list[Path], extra: list[str]) -> tuple[int, float, dict[str, float]]:
    """(frames, the limit's CPU ms, the build's video stages' CPU ms per stage) over `paths`, each clip in its own
    process, one at a time; the limit's set-up and the build's model loading and first video left out."""
    frames, limit_ms, stages = 0, 0.0, {}
    for path in paths:
        n, ms = timed([PYTHON, "-c", LIMIT_CPU, str(path)])[1].split()[-2:]
        frames, limit_ms = frames + int(n), limit_ms + float(ms)
        out = json.loads(timed([PYTHON, "-c", STAGES_CPU, str(path), *extra])[1].strip().splitlines()[-1])
        if out["errors"]:
            print(f"  {path.name}: {out['errors']}")
        for name, seconds in out["ms"].items():
            stages[name] = stages.get(name, 0.0) + seconds * 1000
    return frames, limit_ms, stages


def per_shape_cpu(shapes: dict[str, list[Path]], extra: list[str]) -> None:
    print("in-process CPU ms a frame (one process at a time; the limit: decode + FaceMesh):")
    for shape, paths in shapes.items():
        frames, limit_ms, stages = stage_cpu(paths, extra)
        total = sum(stages.values())
        print(f"  {shape:<14} {len(paths)} clips {frames:5d} frames: limit {limit_ms / frames:5.1f}, build "
              f"{total / frames:5.1f} ({limit_ms / total:.2f} of the limit's rate): " +
              ", ".join(f"{k} {v / frames:.1f}" for k, v in stages.items()))


def per_shape_runs(shapes: dict[str, list[Path]], work: Path, extra: list[str], repeat: int, cores: int) -> None:
    """Limit, script and build as whole processes on each shape's clips; the build's worker ms a frame per stage."""
    print("per shape, whole processes (median of runs): limit / script / build seconds; build's worker ms a frame "
          "per stage (timings.json) against the limit's wall x cores ms a frame")
    for shape, paths in shapes.items():
        folder = paths[0].parent
        if shape == "samples":   # the sample folder may hold more than this set
            folder = work / "samples_links"
            folder.mkdir(exist_ok=True)
            for p in paths:
                if not (folder / p.name).exists():
                    (folder / p.name).symlink_to(p.resolve())
        rows, frames = measure(paths, folder, work / "shape_out", extra, repeat, cores, with_script=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        timings = json.loads((work / "shape_out" / "timings.json").read_text())
        per_frame = ", ".join(f"{k} {v * 1000 / frames:.1f}" for k, v in timings.items()
                              if k not in ("frames", "wall_seconds"))
        print(f"  {shape:<14} {frames:5d} frames: limit {med['limit']:6.1f} s, script {med['script']:6.1f} s, build "
              f"{med['build']:6.1f} s: build {med['script'] / med['build']:.2f}x the script (target >= 2), "
              f"{med['limit'] / med['build']:.2f} of the limit (target >= 0.6); limit "
              f"{med['limit'] * cores * 1000 / frames:.1f} ms a frame; build: {per_frame}")


def whole_set_runs(shapes: dict[str, list[Path]], work: Path, extra: list[str], repeat: int, cores: int) -> None:
    """Every shape's clips in one folder, one build over them all, as a user builds a mixed dataset: limit, floor,
    script and build as whole processes (the issue's targets: build >= 2x the script, >= 0.6 of the limit; the
    floor says how close to the limit any build that crops and encodes can come)."""
    folder = work / "whole_set"
    folder.mkdir(exist_ok=True)
    paths = []
    for shape, clips in shapes.items():
        for p in clips:
            link = folder / f"{shape.replace(' ', '_')}_{p.name}"
            link.symlink_to(p.resolve())
            paths.append(link)
    rows, frames = measure(paths, folder, work / "whole_out", extra, repeat, cores, with_script=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    timings = json.loads((work / "whole_out" / "timings.json").read_text())
    print(f"whole varied set ({len(paths)} clips, {frames} frames, median of {repeat}), whole processes: " +
          ", ".join(f"{k} {v:.1f} s" for k, v in med.items()) +
          f"; build {med['script'] / med['build']:.2f}x the script (target >= 2), {med['limit'] / med['build']:.2f} "
          f"of the limit (target >= 0.6; the floor is {med['limit'] / med['floor']:.2f} of it); build start-up "
          f"{timings.get('startup_seconds', float('nan')):.1f} s; runs (s): " +
          "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in vs)}" for k, vs in rows.items()))
    # what the 0.6 target leaves for the work the floor does not do, against what this build spent on it
    from posetalk_data.report import TIMING_EXTRAS

    stages = {k: v for k, v in timings.items() if k not in TIMING_EXTRAS}
    others = sum(v for k, v in stages.items() if k != "facetrack") / cores
    print(f"  0.6 of the limit leaves {med['limit'] / 0.6 - med['floor']:.1f} s beyond the floor for all the build "
          f"does besides decode, mesh, crop and encode; this build: start-up {timings.get('startup_seconds', 0):.1f} "
          f"s, {others:.1f} s of its {cores} workers in stages other than facetrack "
          f"({', '.join(f'{k} {v:.1f}' for k, v in stages.items() if k != 'facetrack' and v >= 0.5)} worker s), "
          f"facetrack {stages.get('facetrack', 0) / cores:.1f} s (the floor's work plus face detection and cuts)")


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - started, out.stdout


def limit(paths: list[Path], cores: int, code: str = LIMIT) -> tuple[float, int]:
    """Wall time and frames of decode + FaceMesh (or `code`), one process per clip, `cores` at a time, the longest
    clips first, each core taking the next clip as soon as it is free (the build orders its videos the same way)."""
    out = Path(tempfile.mkdtemp(prefix="posetalk-floor-"))

    def one(i_path: tuple[int, Path]) -> int:
        i, path = i_path
        done = subprocess.run([PYTHON, "-c", code, str(path), str(out / f"{i}.mp4")], capture_output=True, text=True)
        return int(done.stdout.strip().splitlines()[-1])

    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        frames = sum(pool.map(one, enumerate(sorted(paths, key=lambda p: p.stat().st_size, reverse=True))))
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return seconds, frames


def script(paths: list[Path]) -> tuple[float, int]:
    seconds, out = timed([PYTHON, "-c", SCRIPT, *map(str, paths)])
    return seconds, int(out.strip().splitlines()[-1])


def build(folder: Path, out: Path, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return timed([str(Path(PYTHON).with_name("posetalk-data")), "build", "--src", "folder", "--input", str(folder),
                  "--out", str(out), "--profile", "offline", *extra], env)[0]


def peak_mb(path: Path, cache_mb: int | None = None) -> float:
    """Peak RSS (MB) of one in-process worker (its ffmpeg children included) building one clip."""
    overrides = [] if cache_mb is None else [f"facetrack.frame_cache_mb={cache_mb}"]
    code = ("import resource, sys; from posetalk_data.config import load_config; "
            "from posetalk_data.pipeline import VideoProcessor; from posetalk_data.schema import VideoSpec; "
            f"VideoProcessor(load_config(None, {overrides!r}))(VideoSpec('folder', 'x', sys.argv[1])); "
            "r = resource.getrusage; print((r(resource.RUSAGE_SELF).ru_maxrss + "
            "r(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)")
    return float(timed([PYTHON, "-c", code, str(path)])[1].strip().splitlines()[-1])


def measure(paths: list[Path], folder: Path, out: Path, extra: list[str], repeat: int, cores: int, *,
            with_script: bool) -> tuple[dict[str, list[float]], int]:
    """Seconds of each command over `repeat` runs (limit, floor, the script if asked, build), and the frames."""
    rows: dict[str, list[float]] = {"limit": [], "floor": [], **({"script": []} if with_script else {}), "build": []}
    frames = 0
    for _ in range(repeat):
        seconds, frames = limit(paths, cores)
        rows["limit"].append(seconds)
        rows["floor"].append(limit(paths, cores, FLOOR)[0])
        if with_script:
            rows["script"].append(script(paths)[0])
        rows["build"].append(build(folder, out, extra))
    return rows, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=SAMPLES, help="folder of clips (default: the sample videos)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median)")
    parser.add_argument("--steady-min", type=float, default=5.0, help="minutes of video for the steady state "
                                                                      "(0: skip)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="build overrides")
    parser.add_argument("--set-name", choices=("full", "quick"), default="full",
                        help="quick: one short clip per shape, one run, no steady state or memory rows (checks that "
                             "the bench works; not a measurement)")
    parser.add_argument("--whole-set-only", action="store_true",
                        help="only the whole varied set in one build against the limit, floor and script")
    parser.add_argument("--cpu-only", action="store_true",
                        help="only each shape's in-process CPU ms a frame per stage (no whole-process runs)")
    args = parser.parse_args()
    quick = args.set_name == "quick"
    if quick:
        args.repeat, args.steady_min = 1, 0
    if not args.input.is_dir():
        sys.exit(f"clips not found at {args.input}")
    from posetalk_data.media import probe

    cores = os.cpu_count() or 1
    paths = sorted(p for p in args.input.iterdir() if p.is_file())
    durations = {p: probe(p).duration for p in paths}
    seconds_of_video = sum(durations.values())
    extra = [a for s in args.set for a in ("--set", s)]
    work = Path(tempfile.mkdtemp(prefix="posetalk-bench-"))
    try:
        shapes = varied_set(args.input, work / "varied", quick)
        if args.whole_set_only:
            whole_set_runs(shapes, work, extra, args.repeat, cores)
            return
        per_shape_cpu(shapes, args.set)
        if args.cpu_only:
            return
        per_shape_runs(shapes, work, extra, args.repeat, cores)
        whole_set_runs(shapes, work, extra, args.repeat, cores)
        if quick:
            return
        rows, frames = measure(paths, args.input, work / "out", extra, args.repeat, cores, with_script=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"clips: {len(paths)} ({seconds_of_video:.1f} s of video, {frames} frames at 25 fps); {cores} cores; "
              f"median of {args.repeat}")
        names = {"limit": "decode + FaceMesh alone, a process per clip", "floor": "limit + crop + H.264 encode, a "
                 "process per clip", "script": "sequential script (ffmpeg -> PNG -> FaceMesh)",
                 "build": "posetalk-data build --profile offline"}
        for key, label in names.items():
            print(f"{label:<48} {med[key]:7.1f} s   {frames / med[key]:7.1f} frames/s   "
                  f"runs {', '.join(f'{s:.1f}' for s in rows[key])}")
        steady = None
        if args.steady_min > 0:
            folder = work / "steady"
            folder.mkdir()
            copies = max(1, int(-(-args.steady_min * 60 // seconds_of_video)))
            for i in range(copies):
                for p in paths:
                    (folder / f"{i:02d}_{p.name}").symlink_to(p.resolve())
            long_paths = sorted(folder.iterdir())
            runs, n = measure(long_paths, folder, work / "steady_out", extra, args.repeat, cores, with_script=False)
            lim, floor, built = (statistics.median(runs[k]) for k in ("limit", "floor", "build"))
            steady = (n / built) / (n / lim)
            marginal = (n - frames) / (built - med["build"])
            print(f"steady state ({copies} x the clips, {n} frames, median of {args.repeat}), whole processes: limit "
                  f"{n / lim:.1f} frames/s, floor {n / floor:.1f} frames/s, build {n / built:.1f} frames/s; build's "
                  f"marginal rate {marginal:.1f} frames/s; runs (s): " +
                  "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in vs)}" for k, vs in runs.items()))
        longest = max(paths, key=durations.get)
        double = work / f"double{longest.suffix}"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-stream_loop", "1", "-i", str(longest), "-c",
                        "copy", str(double)], check=True)
        for cache, label in ((None, "default frame cache"), (0, "frame_cache_mb=0")):
            print(f"peak memory of one worker ({label}): {peak_mb(longest, cache):.0f} MB on {longest.name} "
                  f"({durations[longest]:.1f} s), {peak_mb(double, cache):.0f} MB on it twice as long")
        print(f"ratio build / script time: {med['build'] / med['script']:.2f} (target <= 0.5)")
        if steady is not None:
            print(f"ratio build / limit throughput, steady state: {steady:.2f} whole process (target >= 0.75), "
                  f"{marginal / (n / lim):.2f} marginal; floor / limit {lim / floor:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
