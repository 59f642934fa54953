"""Shared fixtures: real media from ../shared/samples, one Ray start per session, one sample build."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from posetalk_data.config import PIPELINES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"real media not found at {SAMPLES} (the shared samples folder beside the repo)")
    return SAMPLES


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def tiny_hubert(folder: Path, seed: int = 0) -> Path:
    """A saved 2-layer HuBERT with random weights: the real loading and inference code, no download."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=4,
                                    num_conv_pos_embedding_groups=4, feat_extract_norm="layer", conv_bias=True)
    transformers.HubertModel(cfg).save_pretrained(folder)
    return folder


def link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


@pytest.fixture(scope="session")
def sample_input(samples: Path, tmp_path_factory) -> Path:
    """A folder of every real sample clip, the paired clip with its .wav beside it, and broken files."""
    root = tmp_path_factory.mktemp("sample_input")
    for sub in ("videos", "edge"):
        for f in sorted((samples / sub).iterdir()):
            link(f, root / sub / f.name)
    paired = samples / "paired" / "styletalk_feifeili_clip1"
    link(paired / "feifeili_clip1.mp4", root / "paired" / "feifeili_clip1.mp4")
    link(paired / "feifeili_clip1.wav", root / "paired" / "feifeili_clip1.wav")
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("this is a text file with a video suffix\n")
    shutil.copy(samples / "audio" / "hallo_1.wav", bad / "speech_only.mov")        # audio labelled as video
    data = (samples / "videos" / "liveportrait_d11.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    link(samples / "videos" / "grid_lbbc2a.mpg", root / "bad" / "-starts-with-dash.mpg")
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    # a test pattern with a tone: a real, readable video without a face
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i",
                    "sine=frequency=300:sample_rate=16000", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(bad / "no_face.mp4")], check=True)
    # a phone-style file: pixels stored sideways (turned clockwise), display rotation in the metadata
    (root / "rotated").mkdir()
    sideways = root / "sideways.tmp.mp4"
    subprocess.run([*ffmpeg, "-i", str(samples / "edge" / "liveportrait_s13.mp4"), "-t", "2", "-vf", "transpose=1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy", str(sideways)], check=True)
    subprocess.run([*ffmpeg, "-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(root / "rotated" / "s13_rotated.mp4")], check=True)
    sideways.unlink()
    return root


@pytest.fixture(scope="session")
def sample_build(sample_input: Path, ray_session, tmp_path_factory):
    """One Ray build over sample_input, shared by the pipeline tests."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    out = tmp_path_factory.mktemp("sample_build")
    cfg = load_config(PIPELINES / "folder.yaml", ["facetrack.crop_size=256"])
    result = build(folder_specs(sample_input), out, cfg, source="folder", root=sample_input, workers=2)
    return out, result


@pytest.fixture(scope="session")
def grid_build(samples, tmp_path_factory) -> Path:
    """A small in-process build of the two 3 s GRID clips (offline profile, 96 px crops); read-only for tests."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    root = tmp_path_factory.mktemp("grid_in")
    for name in ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg"):
        link(samples / "videos" / name, root / name)
    out = tmp_path_factory.mktemp("grid_build") / "build"
    build(folder_specs(root), out, load_config(None, ["facetrack.crop_size=96"]), source="folder", root=root,
          workers=0)
    return out


# tiny training settings shared by the pose-model tests
TINY_POSE = ["loop.progress=false", "loop.num_workers=0", "loop.batch_size=8", "loop.log_every=5",
             "loop.ckpt_every=20", "data.window=16", "model.d_model=48"]


@pytest.fixture(scope="session")
def pose_runs(grid_build, tmp_path_factory) -> Path:
    """A tiny pose VAE (40 steps) and a tiny PLD in its latent space (40 steps) trained on the GRID shards:
    root/vae and root/pld; read-only for tests (copy a run before resuming it)."""
    from posetalk_models.train.config import load_train_config
    from posetalk_models.train.pose_pld import train_pld
    from posetalk_models.train.pose_vae import train_vae

    root, manifest = tmp_path_factory.mktemp("pose_runs"), grid_build / "manifest.json"
    train_vae(manifest, root / "vae", load_train_config("vae", None, [*TINY_POSE, "loop.max_steps=40"]))
    train_pld(manifest, root / "pld", load_train_config("pld", None, [*TINY_POSE, "loop.max_steps=40",
                                                                      "model.layers=3", "loop.lr=2e-3"]),
              vae_run=root / "vae")
    return root


@pytest.fixture(scope="session")
def video_build(samples, tmp_path_factory) -> Path:
    """64 px crops of three talking clips, each cut at 70 %: train.json holds the first parts, held.json the rest
    (held-out frames of the same people), one.json the first part of one clip. Read-only for tests."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.manifest import filter_manifest
    from posetalk_data.media import probe
    from posetalk_data.schema import VideoSpec

    videos = samples / "videos"
    specs = []
    for name in ("liveportrait_d11.mp4", "liveportrait_d20.mp4", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"):
        cut = round(probe(videos / name).duration * 0.7, 2)
        specs += [VideoSpec("folder", name, str(videos / name), start=0.0, end=cut),
                  VideoSpec("folder", name, str(videos / name), start=cut)]
    out = tmp_path_factory.mktemp("video_build") / "build"
    build(specs, out, load_config(None, ["facetrack.crop_size=64"]), source="folder", root=videos, workers=0)
    filter_manifest(out / "manifest.json", "start == 0", out / "train.json")
    filter_manifest(out / "manifest.json", "start > 0", out / "held.json")
    filter_manifest(out / "manifest.json", "video_id == 'liveportrait_d11.mp4' and start == 0", out / "one.json")
    return out


# tiny settings shared by the video-model tests
TINY_VIDEO = ["loop.progress=false", "loop.num_workers=0", "loop.log_every=10", "loop.lr=1e-3"]


@pytest.fixture(scope="session")
def video_runs(video_build, tmp_path_factory) -> Path:
    """A tiny CoarseNet (200 steps) on the first 70 % of three clips, then a RefineNet (200 steps) over it, both with
    held-out figures on the last 30 %: root/coarse, root/refine. Read-only (copy a run to resume it)."""
    from posetalk_models.train.config import load_train_config
    from posetalk_models.train.coarse import train_coarse
    from posetalk_models.train.refine import train_refine

    root = tmp_path_factory.mktemp("video_runs")
    coarse = load_train_config("coarse", None, [*TINY_VIDEO, "loop.max_steps=200", "loop.ckpt_every=100",
                                                "warp_only_steps=20"])
    train_coarse(video_build / "train.json", root / "coarse", coarse, holdout=video_build / "held.json")
    refine = load_train_config("refine", None, [*TINY_VIDEO, "loop.max_steps=200", "loop.ckpt_every=200"])
    train_refine(video_build / "train.json", root / "refine", refine, coarse_run=root / "coarse",
                 holdout=video_build / "held.json")
    return root


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server on a local port (moto's server mode; not a mock of boto calls), reached the
    standard way: AWS_ENDPOINT_URL and the AWS credential variables, set for this process and what it starts.
    Yields the environment to give subprocesses. The session's Ray (ray_session) predates these variables, so
    builds against the store run in subprocesses or with the endpoint in the config's storage section."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server._server.server_port}"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        server.stop()
        for k, v in before.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def grid_bucket(s3_server, samples) -> str:
    """s3://grid/videos/ holding the two 3 s GRID clips."""
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("grid")
    for name in ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg"):
        fs.put_file(str(samples / "videos" / name), f"grid/videos/{name}")
    return "s3://grid/videos"
