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
real frames alike (upscaled to at least 256 px first, in memory: evaluate.scoring), so extractor bias cancels.
The clips and other methods' videos are read by evaluate.clips. DIR/metrics.json holds every
figure per row and per clip with the definitions; DIR/metrics.md the table; DIR/strips/<key>.png real | rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from posetalk_data.members import resize_frames
from posetalk_data.reading import load_manifest

from posetalk_models.evaluate import metrics as vm
from posetalk_models.evaluate.clips import clips, load_video
from posetalk_models.evaluate.report import finite, markdown, mean_rows, strip
from posetalk_models.evaluate.scoring import extract, score, scorers
from posetalk_models.generate.faces import FaceTrack


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
    definitions = {k: {"label": a, "definition": b} for k, (a, b) in vm.DEFINITIONS.items()}
    result = {"command": "posetalk-eval", "rows": rows, "incomplete": incomplete, "definitions": definitions,
              "not_computed": found.errors, "notes": notes, "settings": settings, "per_clip": per_clip}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(finite(result), indent=1) + "\n")
    (out_dir / "metrics.md").write_text(markdown(result["rows"], found.errors, settings, incomplete))
    return result
