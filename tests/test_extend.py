"""`extend`: feature layers added to or replaced in an existing build, the visual members untouched."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

from posetalk_data.config import load_config
from posetalk_data.extend import extend
from posetalk_data.reading import read_samples
from posetalk_data.verify import verify
from posetalk_data.weights import WeightsMissing

from conftest import tiny_hubert


@pytest.fixture
def build_copy(grid_build, tmp_path):
    return shutil.copytree(grid_build, tmp_path / "b", ignore=shutil.ignore_patterns(".staging"))


def shard_bytes(out):
    return [p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))]


def test_replacing_a_layer_with_the_same_model_changes_no_byte(build_copy):
    before = shard_bytes(build_copy)
    extend(build_copy / "manifest.json", ["mel", "minilm"], load_config(None))
    assert shard_bytes(build_copy) == before and verify(build_copy / "manifest.json") == []


def test_hubert_layer_added_from_a_local_model(build_copy, tmp_path):
    folder = tiny_hubert(tmp_path / "tiny-hubert")
    before = dict(read_samples(build_copy / "manifest.json"))
    manifest = extend(build_copy / "manifest.json", ["hubert"], load_config(None, [f"speech.local_dir={folder}"]))
    assert "hubert.npy" in manifest["members"] and "weights_sha256" in manifest["versions"]["hubert.npy"]
    assert verify(build_copy / "manifest.json") == []
    for key, sample in read_samples(build_copy / "manifest.json"):
        frames = json.loads(sample["meta.json"])["frames"]
        hubert = np.load(io.BytesIO(sample["hubert.npy"]))
        assert hubert.shape == (frames, 32) and hubert.dtype == np.float16
        for name in ("video.mp4", "pose.npy", "mel.npy", "text.json"):   # everything else as it was
            assert sample[name] == before[key][name]


def test_missing_weights_stop_before_any_shard_is_touched(build_copy):
    before = shard_bytes(build_copy)
    with pytest.raises(WeightsMissing, match="hubert"):
        extend(build_copy / "manifest.json", ["hubert"], load_config(None))
    assert shard_bytes(build_copy) == before
    with pytest.raises(ValueError, match="unknown feature"):
        extend(build_copy / "manifest.json", ["whisper"], load_config(None))


def test_extend_command(build_copy):
    from typer.testing import CliRunner

    from posetalk_data.cli import app

    ok = CliRunner().invoke(app, ["extend", "--manifest", str(build_copy / "manifest.json"), "--features", "mel"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, ["extend", "--manifest", str(build_copy / "manifest.json"), "--features", "clip"])
    assert bad.exit_code == 2 and "CLIP" in " ".join(bad.output.split())


def test_extend_killed_before_its_manifest_is_finished_by_a_rerun(build_copy, tmp_path):
    """Shards renamed, manifest not yet written: the rerun accepts its own journalled shards and finishes."""
    cfg = load_config(None, [f"speech.local_dir={tiny_hubert(tmp_path / 'tiny-hubert')}"])
    shards = len(list((build_copy / "shards").glob("*.tar")))

    def crash_after_last_shard(shard: str, seen=[]):
        seen.append(shard)
        if len(seen) == shards:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extend(build_copy / "manifest.json", ["hubert"], cfg, progress=crash_after_last_shard)
    assert any(p.what == "checksum" for p in verify(build_copy / "manifest.json"))   # the new bytes, not yet listed
    manifest = extend(build_copy / "manifest.json", ["hubert"], cfg)
    assert "hubert.npy" in manifest["members"] and verify(build_copy / "manifest.json") == []
    assert not (build_copy / "manifest.json.extending").exists()
