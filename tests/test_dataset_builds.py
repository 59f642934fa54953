"""End to end: dataset-shaped folders (real sample clips under the datasets' paths, metadata written here) build
shards whose keys, times and text come from the metadata; malformed entries cost only their own clip."""
from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds
from typer.testing import CliRunner

from posetalk_data.cli import app


def put(path: Path, content: str | bytes | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Path):
        os.symlink(content, path)
    else:
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def build(src: str, root: Path, out: Path) -> tuple[dict, list[dict], list[dict]]:
    result = CliRunner().invoke(app, ["build", "--src", src, "--root", str(root), "--out", str(out),
                                      "--workers", "0", "--profile", "offline", "--set", "facetrack.crop_size=128"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    samples = list(wds.WebDataset([str(out / s["path"]) for s in manifest["shards"]], shardshuffle=False))
    metas = [json.loads(s["meta.json"]) for s in samples]
    return manifest, metas, pq.read_table(out / "failures.parquet").to_pylist(), samples


def test_hdtf_tree_builds_its_annotated_clip(samples, tmp_path):
    root = tmp_path / "HDTF"
    meta = root / "HDTF_dataset"
    put(meta / "WDA_video_url.txt", b"\xef\xbb\xbfAlexandriaOcasioCortez https://www.youtube.com/watch?v=SP0MG9TecVM")
    put(meta / "WDA_resolution.txt", "AlexandriaOcasioCortez.mp4 720\n")
    put(meta / "WDA_annotion_time.txt", "AlexandriaOcasioCortez.mp4 00:01-00:04 00:05-00:30 \n")
    put(meta / "WDA_crop_wh.txt", "AlexandriaOcasioCortez_0.mp4 100 520 0 520\n")
    put(meta / "WDA_crop_ratio.txt", "AlexandriaOcasioCortez_0.mp4 1.2\n")
    put(root / "videos" / "WDA_AlexandriaOcasioCortez.mp4",
        samples / "videos" / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4")
    manifest, metas, failures, _ = build("hdtf", root, tmp_path / "out")
    (meta_,) = metas
    assert meta_["key"].startswith("hdtf_WDA_AlexandriaOcasioCortez_000_00001000_00004000_")
    assert (meta_["start"], meta_["end"]) == (1.0, 4.0) and meta_["frames"] == 75
    assert meta_["extra"]["crop_hint"]["units"] == "normalised"
    (failure,) = failures                                   # 00:05-00:30 is past the 8 s video's end
    assert failure["stage"] == "source" and failure["video_id"] == "WDA_AlexandriaOcasioCortez_001"
    assert "end" in failure["reason"]


def test_celebv_text_tree_builds_with_its_action_captions(samples, tmp_path):
    root = tmp_path / "CelebV-Text"
    entry = lambda ytb, k, a, b: {"meta_video_names": f"{ytb}_{k}", "ytb_id": ytb,
                                  "duration": {"start_sec": a, "end_sec": b},
                                  "bbox": {"left": 0.2, "top": 0.0, "right": 0.8, "bottom": 0.7}, "version": "v0.11"}
    # a broken entry after a good one: that entry is lost, with a reason, the good one is read
    info = ('{\n "-dashId_000_1_0.mp4": ' + json.dumps(entry("-dashId_000", 1, 1.0, 3.5)) + ',\n'
            ' "broken_1_0.mp4": {"ytb_id": "broken", "duration": {"start_sec": 1.0,,\n}\n}\n')
    put(root / "celebvtext_info.json", info)
    put(root / "downloaded_celebvtext" / "raw" / "-dashId_000.mp4", samples / "videos" / "liveportrait_d20.mp4")
    put(root / "texts" / "action_dur" / "-dashId_000_1_0.txt", "The man talks and nods.\nHe turns his head.\n")
    manifest, metas, failures, (sample,) = build("celebv-text", root, tmp_path / "out")
    text, embeddings = json.loads(sample["text.json"]), np.load(io.BytesIO(sample["minilm.npy"]))
    (meta_,) = metas
    # the span, to the frame: 2.5 s is 62.5 frames at 25 fps, so the clip ends on the next frame boundary
    assert meta_["video_id"] == "-dashId_000_1_0" and meta_["start"] == 1.0 and abs(meta_["end"] - 3.5) <= 0.04
    assert meta_["key"].startswith(f"celebv-text_dashId_000_1_0_00001000_{round(meta_['end'] * 1000):08d}_")
    assert meta_["extra"]["prompts"] == ["The man talks and nods.", "He turns his head."]
    assert text["prompts"] == meta_["extra"]["prompts"] and embeddings.shape == (2, 384)   # captions are prompts
    (failure,) = failures
    assert failure["video_id"] == "broken_1_0" and failure["stage"] == "source" and "cannot be read" in failure["reason"]


def test_mead_tree_keeps_emotion_level_actor(samples, tmp_path):
    root = tmp_path / "MEAD"
    clip = root / "M003" / "video" / "front" / "angry" / "level_2" / "001.mp4"
    put(clip, samples / "videos" / "grid_bbaf2n.mpg")
    audio = root / "M003" / "audio" / "angry" / "level_2" / "001.m4a"
    audio.parent.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(samples / "videos" / "grid_bbaf2n.mpg"),
                    "-vn", "-c:a", "aac", str(audio)], check=True)
    manifest, metas, failures, _ = build("mead", root, tmp_path / "out")
    (meta_,) = metas
    assert {k: meta_["extra"][k] for k in ("actor", "emotion", "level", "view")} == \
        {"actor": "M003", "emotion": "angry", "level": 2, "view": "front"}
    assert meta_["audio_source"] == "001.m4a" and not failures
