"""posetalk-eval's harness: self-reenactment on a test manifest, any method's videos scored the same way.

For every clip: the source is its first frame and the driving pose, gaze and speech are the clip's own, so the
generated video can be compared with the real one pixel for pixel (the paper's SSIM / LPIPS need that). Rows:

- real: the real frames against themselves where that is meaningful (SSIM 1, PSNR inf, zero pose error) and the
  real footage's own identity, lip sync and pose diversity: the reference values
- static: the first frame repeated: the floor a method has to beat
- the model (a generator run; its frames resized to the evaluation size when that differs from the generator's),
  and every --videos folder (files named <sample key>.mp4, resized to the evaluation size, cut to the clip's
  length). A method whose video is missing or shorter than a clip is not scored on part of it: its row is marked
  incomplete in the table and has no averages.

Geometry (pose, gaze, mouth, expression) comes from posetalk's own extractor run on each row's frames and on the
real frames alike (upscaled to at least 256 px first), so extractor bias cancels. DIR/metrics.json holds every
figure per row and per clip with the definitions; DIR/metrics.md the table; DIR/strips/<key>.png real | rows.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posetalk_data.media import flac_samples, mp4_frames, resize_frames
from posetalk_data.reading import load_manifest, read_samples
from posetalk_data.schema import VIDEO_FPS

from posetalk_models.evaluate import metrics as vm
from posetalk_models.evaluate.report import finite, markdown, mean_rows, strip
from posetalk_models.generate.faces import FaceTrack, extraction_config, face_tracks
from posetalk_models.data.frames import crop_motion
from posetalk_models.generate.render import write_video
from posetalk_models.data.stream import npy

@dataclass
class Clip:
    key: str
    source: np.ndarray          # (C, C, 3) uint8: the first frame at the stored crop size C (the generator's input)
    real: np.ndarray            # (T, S, S, 3) uint8 at the evaluation size
    audio: np.ndarray           # 16 kHz float
    motion: np.ndarray          # (T, 10) crop-space motion relative to frame 0
    speech: np.ndarray | None   # (T, D) the manifest's speech features


@dataclass
class Scorers:
    """The metrics that need models, built once; `errors` says why one is not computed."""
    lpips: object = None
    identity: object = None
    syncnet: object = None
    expert: object = None
    errors: dict[str, str] = field(default_factory=dict)


def clips(manifest: str | Path, size: int, speech: str | None, limit: int | None, max_frames: int | None):
    """The test manifest's clips at the evaluation size, in key order."""
    for i, (key, sample) in enumerate(read_samples(manifest)):
        if limit is not None and i >= limit:
            return
        pose, gaze, landmarks = npy(sample["pose.npy"]), npy(sample["gaze.npy"]), npy(sample["landmarks.npy"])
        t = len(pose) if max_frames is None else min(len(pose), max_frames)
        stored = mp4_frames(sample["video.mp4"], list(range(t)))    # at the stored size, resized below
        audio = flac_samples(sample["audio.flac"])[: round(t / VIDEO_FPS * 16000)]
        features = npy(sample[f"{speech}.npy"]).astype(np.float32)[:t] if speech else None
        yield Clip(key, stored[0], resize_frames(stored, size), audio, crop_motion(pose, gaze, landmarks, 0)[:t], features)


def extract(frames: np.ndarray, pipeline: dict | None) -> FaceTrack | None:
    """posetalk's extractor on frames (upscaled to >= 256 px); None when it finds no face. A clip under a second is
    measured too: the shortest face span kept is half the clip, up to the builds' 1 s."""
    if frames.shape[1] < 256:
        frames = resize_frames(frames, 256)
    min_seconds = min(1.0, len(frames) / VIDEO_FPS / 2)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(frames, Path(tmp) / "frames.mp4", crf=12)
        try:
            tracks = face_tracks(video, extraction_config(pipeline, single_face=False, crop_size=256,
                                                          min_seconds=min_seconds))
        except ValueError:
            return None
    return tracks[0]


def score(frames: np.ndarray, clip: Clip, real_track: FaceTrack | None, source_track: FaceTrack | None,
          scorers: Scorers, pipeline: dict | None, *, is_real: bool = False) -> dict[str, float]:
    """Every metric of one row's frames for one clip."""
    out = vm.ssim_psnr(frames, clip.real)
    if scorers.lpips is not None:
        out["lpips"] = scorers.lpips(frames, clip.real)
    track = real_track if is_real else extract(frames, pipeline)
    out["face_found"] = 0.0 if track is None else len(track.frames) / len(frames)
    if track is None:
        return out
    if real_track is not None:
        out.update(vm.geometry_errors(track, real_track))
    out["pose_diversity"] = vm.diversity(track)
    if scorers.identity is not None and source_track is not None:
        out["identity_dlib"] = scorers.identity(source_track, track)   # no ArcFace scorer exists yet
    if scorers.syncnet is not None:
        from posetalk_models.nets.syncnet_v2 import lse

        out.update({k: v for k, v in lse(scorers.syncnet, frames, clip.audio).items() if k != "offset"})
    if scorers.expert is not None and clip.speech is not None:
        out.update(vm.expert_sync(scorers.expert, track, clip.speech))
    return out


def check_speech(manifest: str | Path, speech: str | None, sidecar: dict) -> None:
    """The generator must be driven by the speech features it was trained on: the manifest's must be the same."""
    from posetalk_models.generate.pose import check_same

    if speech is None:
        return
    recorded = sidecar["features"]["speech"]
    versions = load_manifest(manifest).get("versions", {}).get(recorded["member"])
    if versions is None:
        raise ValueError(f"{manifest}: no {recorded['member']} features, which the generator was trained on "
                         "(add them with `posetalk-data extend`)")
    check_same("speech", recorded["versions"], json.loads(versions))


def scorers(*, lpips_weights: str | None, syncnet_weights: str | None, sync_run: str | Path | None,
            speech: str | None, device: str) -> Scorers:
    """The model-backed metrics that can be built here; each one that cannot says why in `errors`."""
    from posetalk_data.weights import WeightsMissing

    out = Scorers()
    try:
        out.lpips = vm.LPIPS(lpips_weights, device)
    except WeightsMissing as err:
        out.errors["lpips"] = str(err)
    try:
        out.identity = vm.DlibIdentity()
    except WeightsMissing as err:
        out.errors["identity_dlib"] = str(err)
    from posetalk_models.nets.syncnet_v2 import load_syncnet

    try:
        out.syncnet = load_syncnet(syncnet_weights, device)
    except WeightsMissing as err:
        if syncnet_weights:
            raise                                          # asked for by path: a missing file is an error
        out.errors["lse_d / lse_c"] = str(err)
    if sync_run:
        from posetalk_models.runs import load_run

        expert = load_run(sync_run, kinds=("sync",), device=device, flag="--sync")
        member = expert.sidecar["features"]["speech"]["member"]
        if speech is None or member != f"{speech}.npy":
            raise ValueError(f"the lip-sync expert {sync_run} reads {member}; the test manifest's speech "
                             f"features are {speech}")
        out.expert = expert.model
    else:
        out.errors["ps_d / ps_c"] = "the posetalk lip-sync expert's scores need --sync RUN (posetalk-train sync)"
    return out


def evaluate(manifest: str | Path, out_dir: str | Path, *, generator: str | Path | None = None,
             videos: dict[str, Path] | None = None, size: int | None = None, lpips_weights: str | None = None,
             syncnet_weights: str | None = None, sync_run: str | Path | None = None, limit: int | None = None,
             max_frames: int | None = None, enhance: bool = False, device: str = "cpu", progress=None) -> dict:
    """Score the rows (real, static, the generator run, each videos folder) on the manifest's clips; writes
    out_dir/metrics.json, metrics.md and strips/<key>.png and returns the metrics.json content."""
    from posetalk_models.data.windows import DataConfig, resolve_features
    from posetalk_models.generate.talk import load_generator, talk

    out_dir = Path(out_dir)
    videos = videos or {}
    cascade = sidecar = None
    speech = resolve_features(manifest, DataConfig(speech="auto", text=None)).speech if generator is None else None
    if generator is not None:
        gen = load_generator(generator, device=device)
        cascade, sidecar = gen.cascade, gen.sidecar
        size = size or cascade.size
        speech = gen.speech
        check_speech(manifest, speech, sidecar)
        cascade.output_stage(enhance, generator)         # an --enhance without an enhancer: refused before scoring
    size = size or 256
    pipeline = load_manifest(manifest).get("pipeline")
    found = scorers(lpips_weights=lpips_weights, syncnet_weights=syncnet_weights, sync_run=sync_run, speech=speech,
                    device=device)
    per_clip, notes, incomplete = {}, [], {}
    if cascade is not None and size != cascade.size:
        notes.append(f"model: rendered at the generator's {cascade.size} px, resized to {size} px for scoring")
    for clip in clips(manifest, size, speech, limit, max_frames):
        rows = {"real": clip.real, "static": np.repeat(clip.real[:1], len(clip.real), 0)}
        if cascade is not None:
            rows["model"] = resize_frames(talk(clip.source, clip.motion[0, :7], clip.motion, clip.speech, gen,
                                         enhance=enhance).frames, size)
        for name, folder in videos.items():
            path = Path(folder) / f"{clip.key}.mp4"
            frames = load_video(path, size, len(clip.real)) if path.is_file() else None
            if frames is None or len(frames) < len(clip.real):
                incomplete.setdefault(name, []).append(
                    f"no {path.name}" if frames is None else
                    f"{path.name} has {len(frames)} of the clip's {len(clip.real)} frames")
                continue
            rows[name] = frames
        real_track = extract(clip.real, pipeline)
        source_track = None if real_track is None else FaceTrack(
            real_track.frames[:1], real_track.pose[:1], real_track.gaze[:1], real_track.landmarks[:1], 0.0, 0.0)
        if real_track is None:
            notes.append(f"{clip.key}: the extractor finds no face in the real frames; geometry not scored")
        per_clip[clip.key] = {name: score(frames, clip, real_track, source_track, found, pipeline,
                                          is_real=name == "real")
                              for name, frames in rows.items()}
        strip(rows, out_dir / "strips" / f"{clip.key}.png")
        if progress:
            progress(clip.key)
    if not per_clip:
        raise ValueError(f"{manifest}: no clips to evaluate")
    settings = {"manifest": str(manifest), "clips": len(per_clip), "size": size, "generator": str(generator or ""),
                "videos": {k: str(v) for k, v in videos.items()}, "max_frames": max_frames, "speech": speech}
    rows = mean_rows(per_clip)
    rows.update({name: {} for name in incomplete})          # averages over some clips only would mislead
    result = {"rows": rows, "incomplete": incomplete, "definitions": {k: {"label": a, "definition": b}
                                                           for k, (a, b) in vm.DEFINITIONS.items()},
              "not_computed": found.errors, "notes": notes, "settings": settings, "per_clip": per_clip}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(finite(result), indent=1) + "\n")
    (out_dir / "metrics.md").write_text(markdown(result["rows"], found.errors, settings, incomplete))
    return result


def load_video(path: Path, size: int, frames: int) -> np.ndarray:
    """Up to `frames` frames of another method's video at 25 fps, resized to size x size."""
    from posetalk_data.media import read_frames

    out = []
    for frame in read_frames(path, fps=VIDEO_FPS, size=(size, size)):
        out.append(frame)
        if len(out) == frames:
            break
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
