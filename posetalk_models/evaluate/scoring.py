"""How posetalk-eval scores one row's frames against a clip: the pixel figures, the geometry of posetalk's own face
extractor run on the frames in memory (upscaled to at least 256 px; nothing is encoded for it), and the metrics that
need models (LPIPS, dlib identity, SyncNet's LSE, the posetalk lip-sync expert), each built once by `scorers`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posetalk_data.members import resize_frames
from posetalk_data.schema import VIDEO_FPS

from posetalk_models.evaluate import metrics as vm
from posetalk_models.evaluate.clips import Clip
from posetalk_models.generate.faces import FaceTrack, extraction_config, face_tracks


@dataclass
class Scorers:
    """The metrics that need models, built once; `errors` says why one is not computed."""
    lpips: object = None
    identity: object = None
    syncnet: object = None
    expert: object = None
    errors: dict[str, str] = field(default_factory=dict)


def extract(frames: np.ndarray, pipeline: dict | None) -> FaceTrack | None:
    """posetalk's extractor on frames (upscaled to >= 256 px); None when it finds no face. A clip under a second is
    measured too: the shortest face span kept is half the clip, up to the builds' 1 s."""
    if frames.shape[1] < 256:
        frames = resize_frames(frames, 256)
    min_seconds = min(1.0, len(frames) / VIDEO_FPS / 2)
    try:
        tracks = face_tracks(frames, extraction_config(pipeline, single_face=False, crop_size=256,
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
