"""Audio-video offset (posetalk_data.avsync): accuracy on known shifts, in-sync against voice-over confidence, cost.

Each talking clip of 5 s or more in ../shared/samples (videos/ and the paired clip) is built as it is and as copies
whose audio is moved by --shifts frames (video stream copied untouched, audio re-encoded as PCM), plus voice-over
copies: each face with each speech file of samples/audio. One in-process build (--workers, default 0), then:

per clip   : the offset found for the original, and for each shift the error (offset(copy) - offset(original) -
             shift) and what is left after the correction (offset - shift applied), against the original's
accuracy   : pairs within +-1 frame (the issue asks for >= 80 %), per clip and overall
confidence : originals and moved copies (in sync with their faces) against voice-over copies; how many of each
             are flagged voice_over / av_sync_low
cost       : the sync stage's worker ms per frame from the build's timings, next to the facetrack stage's (decode,
             detection, face mesh, crop encode) and MediaPipe Face Mesh alone on the clips' crops

    python bench/sync.py [--out DIR] [--clips liveportrait_d11.mp4 ...] [--shifts -6 -3 2 5] [--crop 256]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"
PAIRED = ("styletalk_feifeili_clip1", "feifeili_clip1")


def originals(names: list[str] | None) -> dict[str, tuple[Path, Path | None]]:
    """clip id -> (video, separate audio or None): the talking clips of >= 5 s."""
    from posetalk_data.media import probe

    found = {p.name: (p, None) for p in sorted((SAMPLES / "videos").iterdir()) if probe(p).duration >= 5}
    folder, stem = PAIRED
    found[stem] = (SAMPLES / "paired" / folder / f"{stem}.mp4", SAMPLES / "paired" / folder / f"{stem}.wav")
    return {k: v for k, v in found.items() if not names or k in names}


def make_inputs(root: Path, clips: dict, shifts: list[int], voice_over: bool) -> list:
    from posetalk_data.media import audio_moved_copy
    from posetalk_data.schema import VideoSpec

    specs = []
    for clip, (video, audio) in clips.items():
        specs.append(VideoSpec("folder", clip, str(video), str(audio) if audio else None))
        for shift in shifts:
            audio_moved_copy(video, root / f"{clip}@{shift:+d}.mkv", shift, audio=audio)
            specs.append(VideoSpec("folder", f"{clip}@{shift:+d}", str(root / f"{clip}@{shift:+d}.mkv")))
        for speech in sorted((SAMPLES / "audio").glob("*.wav")) if voice_over else []:
            out = root / f"{clip}@voice_over_{speech.stem}.mkv"
            audio_moved_copy(video, out, 0, audio=speech)
            specs.append(VideoSpec("folder", out.stem, str(out)))
    return specs


def mesh_ms_per_frame(build: Path, rows: list[dict], frames: int = 100) -> float:
    """MediaPipe Face Mesh alone (video mode, as the build runs it) on the first crops of the first clip."""
    from itertools import islice

    from posetalk_data.media import read_frames
    from posetalk_data.reading import safe_samples
    from posetalk_data.stages.landmarks import MeshTracker

    row = rows[0]
    members = next(m for _, m in safe_samples(build / row["shard"], keys={row["key"]}))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "crop.mp4").write_bytes(members["video.mp4"])
        crops = list(islice(read_frames(Path(tmp) / "crop.mp4", fps=25), frames))
    mesh = MeshTracker()
    mesh(crops[0])            # the first call builds the graph
    started = time.perf_counter()
    for crop in crops:
        mesh(crop)
    return 1000 * (time.perf_counter() - started) / len(crops)


def report(build: Path, clips: dict, shifts: list[int]) -> None:
    import pyarrow.parquet as pq

    rows = {r["video_id"]: r for r in pq.read_table(build / "samples.parquet").to_pylist()}
    print(f"{'clip':46s} {'offset':>6s} {'conf':>5s}  per shift: error (found - original - shift) / left after "
          "correction vs original")
    hits = total = 0
    for clip in clips:
        if clip not in rows:
            print(f"{clip:46s} not kept (see failures.parquet)")
            continue
        o = rows[clip]
        left0 = o["av_offset_frames"] - o["av_shift_applied_frames"]
        cells, ok = [], 0
        for shift in shifts:
            c = rows.get(f"{clip}@{shift:+d}")
            if c is None or c["av_offset_frames"] is None:
                cells.append(f"{shift:+d}: -")
                continue
            error = int(c["av_offset_frames"] - o["av_offset_frames"] - shift)
            left = int(c["av_offset_frames"] - c["av_shift_applied_frames"] - left0)
            ok += abs(error) <= 1
            cells.append(f"{shift:+d}: {error:+d}/{left:+d}")
        hits, total = hits + ok, total + len(shifts)
        print(f"{clip:46s} {o['av_offset_frames']:+6.0f} {o['av_sync_confidence']:5.2f}  {'  '.join(cells)}  "
              f"{ok}/{len(shifts)} within +-1")
    print(f"accuracy: {hits}/{total} pairs within +-1 frame ({100 * hits / max(total, 1):.0f} %)")
    groups = {"in sync": [r for k, r in rows.items() if "@voice_over" not in k],
              "voice-over": [r for k, r in rows.items() if "@voice_over" in k]}
    for name, group in groups.items():
        conf = [r["av_sync_confidence"] for r in group if r["av_sync_confidence"] is not None]
        if conf:
            flagged = {f: sum(f in r["flags"] for r in group) for f in ("voice_over", "av_sync_low")}
            print(f"confidence {name:10s}: n={len(conf)} median {statistics.median(conf):.2f} "
                  f"min {min(conf):.2f} max {max(conf):.2f}; flagged {flagged}")
    timings = json.loads((build / "timings.json").read_text())
    per_frame = {s: 1000 * timings[s] / timings["frames"] for s in ("sync", "facetrack")}
    print(f"cost: sync stage {per_frame['sync']:.3f} ms/frame; facetrack stage {per_frame['facetrack']:.2f} "
          f"ms/frame; face mesh alone {mesh_ms_per_frame(build, list(rows.values())):.2f} ms/frame "
          f"({timings['frames']} frames)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="build folder (default: a temporary one)")
    parser.add_argument("--clips", nargs="*", help="clip ids (file names in samples/videos, or feifeili_clip1)")
    parser.add_argument("--shifts", nargs="*", type=int, default=[-6, -3, 2, 5])
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--no-voice-over", action="store_true", help="skip the voice-over copies")
    args = parser.parse_args()

    from posetalk_data.build import build
    from posetalk_data.config import load_config

    clips = originals(args.clips)
    with tempfile.TemporaryDirectory(prefix="bench_sync_") as tmp:
        out = args.out or Path(tmp) / "build"
        specs = make_inputs(Path(tmp), clips, args.shifts, not args.no_voice_over)
        started = time.perf_counter()
        build(specs, out, load_config(None, [f"facetrack.crop_size={args.crop}"]), source="folder", root=None,
              workers=args.workers)
        print(f"{len(specs)} videos built in {time.perf_counter() - started:.0f} s (crop {args.crop} px)")
        report(out, clips, args.shifts)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
