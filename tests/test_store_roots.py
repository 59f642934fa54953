"""Dataset roots in an object store (a real S3 server: moto's, on a local port): `sources inspect` and `build` with
--root s3://... for HDTF and MEAD read the real metadata from the store, find the media in one listing and leave
the download to the build's worker; a user's mistake is one line."""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posetalk_data import storage
from posetalk_data.cli import app
from posetalk_data.sources import celebv_text, hdtf, mead

from conftest import link

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "metadata"
HDTF_CLIP = "WDA_AlexandriaOcasioCortez_000"     # the sample is clip 0 of this video (00:05-01:35), cut
MEAD_TAKE = "W003/video/front/neutral/level_1/001.mp4"   # actor, emotion, level of the real baseline frame list
runner = CliRunner()


def said(result) -> str:
    return " ".join(result.output.split())


def inspect(src: str, root: str, *more: str):
    return runner.invoke(app, ["sources", "inspect", "--src", src, "--root", root, *more])


def upload(local: Path, url: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem()
    bucket = url.removeprefix("s3://").split("/")[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(str(local) + "/", url.removeprefix("s3://") + "/", recursive=True)
    return url


@pytest.fixture(scope="module")
def hdtf_root(s3_server, samples, tmp_path_factory) -> tuple[Path, str]:
    """The real HDTF metadata (15 files) and the sample clip under the name download.py gives a cut clip, on disk
    and in s3://hdtf/HDTF. (local, URL)"""
    if not (METADATA / "hdtf").is_dir():
        pytest.skip(f"real dataset metadata not found at {METADATA}")
    root = tmp_path_factory.mktemp("hdtf")
    for f in sorted((METADATA / "hdtf" / "HDTF_dataset").iterdir()):
        link(f, root / "HDTF_dataset" / f.name)
    link(samples / "videos" / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", root / "clips" / f"{HDTF_CLIP}.mp4")
    return root, upload(root, "s3://hdtf/HDTF")


@pytest.fixture(scope="module")
def mead_root(s3_server, samples, tmp_path_factory) -> tuple[Path, str]:
    """A MEAD tree (one take of the real frame list's actor W003, its .m4a, a stray file) on disk and in
    s3://mead/MEAD; and the real baseline frame list alone in s3://mead/baseline. (local, URL)"""
    if not (METADATA / "mead").is_dir():
        pytest.skip(f"real dataset metadata not found at {METADATA}")
    root = tmp_path_factory.mktemp("mead")
    grid = samples / "videos" / "grid_bbaf2n.mpg"
    link(grid, root / MEAD_TAKE)
    audio = root / "W003" / "audio" / "neutral" / "level_1" / "001.m4a"
    audio.parent.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(grid), "-vn", "-c:a", "aac", str(audio)],
                   check=True)
    link(grid, root / "W003" / "video" / "front" / "neutral" / "stray.mp4")
    baseline = tmp_path_factory.mktemp("mead_baseline")
    link(METADATA / "mead" / "video_list_test.txt", baseline / "video_list_test.txt")
    upload(baseline, "s3://mead/baseline")
    return root, upload(root, "s3://mead/MEAD")


def test_hdtf_root_in_a_bucket_is_inspected_as_on_disk(hdtf_root):
    """The real metadata read from the store and the clip found in its listing give the scan a local root gives;
    `sources inspect --root s3://...` (a str: a Path made it s3:/hdtf) reports it and probes nothing."""
    root, url = hdtf_root
    local, store = hdtf.scan(root, probe=False), hdtf.scan(url)
    assert store.clips == local.clips and len(store.clips) == 436
    assert (store.problems, store.counts, store.notes) == (local.problems, local.counts, local.notes)
    assert store.metadata == local.metadata and len(store.metadata) == 15
    [spec] = store.specs
    assert (spec.video_id, spec.path) == (HDTF_CLIP, f"{url}/clips/{HDTF_CLIP}.mp4")
    assert spec.extra == local.specs[0].extra and spec.extra["source_offset"] == 5.0
    assert store.sizes[spec.path] == (root / "clips" / f"{HDTF_CLIP}.mp4").stat().st_size
    result = inspect("hdtf", url, "--json", "--probe")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["root"] == url and report["counts"] == local.counts and report["counts"]["specs"] == 1
    assert "UTF-8 byte-order mark" in " ".join(report["notes"])
    assert any("probed by the build's workers" in line for line in report["plan"])


def test_mead_root_in_a_bucket_is_inspected_and_built(mead_root, tmp_path):
    """MEAD's tree from one listing (the take, its .m4a, a stray file); the build's worker downloads the take and
    its audio; the manifest records paths relative to the root URL."""
    root, url = mead_root
    local, store = mead.scan(root), mead.scan(url)
    assert store.clips == local.clips and store.problems == local.problems and store.counts == local.counts
    assert [(p.id, p.kind) for p in store.problems] == [("W003/video/front/neutral/stray.mp4", "bad_path")]
    [spec] = store.specs
    assert (spec.path, spec.audio_path) == (f"{url}/{MEAD_TAKE}", f"{url}/W003/audio/neutral/level_1/001.m4a")
    result = inspect("mead", url)
    assert result.exit_code == 0 and "process 1 videos" in said(result) and f"mead at {url}" in said(result)
    refused = inspect("mead", "s3://mead/baseline")      # only the baseline code's frame list: not the videos
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "video_list_test.txt here is a frame list of the MEAD baseline code" in said(refused)

    out = f"{url}/builds/one"
    built = runner.invoke(app, ["build", "--src", "mead", "--root", url, "--out", out, "--workers", "0",
                                "--profile", "offline", "--set", "facetrack.crop_size=64"])
    assert built.exit_code == 0, built.output
    from posetalk_data.reading import read_samples

    [(key, sample)] = list(read_samples(f"{out}/manifest.json"))
    meta = json.loads(sample["meta.json"])
    assert {k: meta["extra"][k] for k in ("actor", "emotion", "level", "view")} == \
        {"actor": "W003", "emotion": "neutral", "level": 1, "view": "front"}
    assert meta["audio_source"] == "001.m4a" and len(sample["audio.flac"]) > 1000      # fetched by the worker
    [row] = pq.read_table(io.BytesIO(storage.read_bytes(f"{out}/samples.parquet"))).to_pylist()
    assert row["source_path"] == MEAD_TAKE


@pytest.mark.parametrize("src, wanted", [("hdtf", ("no HDTF metadata", "found under s3://mead/MEAD")),
                                         ("celebv-text", ("no CelebV-Text clip info", "found under s3://mead/MEAD")),
                                         ("mead", ("no MEAD actor folders under s3://hdtf/HDTF",))])
def test_a_store_root_without_the_dataset_is_one_line(mead_root, hdtf_root, src, wanted):
    """Metadata missing in the store, an empty prefix, a bucket that does not exist: one line each, for inspect
    and build, and nothing written."""
    root = "s3://hdtf/HDTF" if src == "mead" else "s3://mead/MEAD"
    for result in (inspect(src, root), inspect(src, "s3://mead/nothing-here"), inspect(src, "s3://no-such-bucket"),
                   runner.invoke(app, ["build", "--src", src, "--root", root, "--out", "s3://mead/out-x",
                                       "--workers", "0", "--profile", "offline"])):
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.startswith("error:") and len(result.output.strip().splitlines()) <= 2, result.output
    assert all(w in said(inspect(src, root)) for w in wanted), said(inspect(src, root))
    assert "--root s3://mead/nothing-here holds no files" in said(inspect(src, "s3://mead/nothing-here"))
    assert "--root s3://no-such-bucket holds no files" in said(inspect(src, "s3://no-such-bucket"))
    assert not storage.find("s3://mead/out-x")


def test_a_missing_bucket_is_named(s3_server, tmp_path):
    """--input s3://<no such bucket>: the input named in the one line (the store's own message named nothing)."""
    result = runner.invoke(app, ["build", "--src", "folder", "--input", "s3://no-such-bucket/videos", "--out",
                                 str(tmp_path / "out"), "--workers", "0"])
    assert result.exit_code == 2 and "input s3://no-such-bucket/videos holds no files" in said(result), result.output


def test_celebv_text_older_form_read_from_a_store(s3_server, tmp_path):
    """The older {"clips_set1": {...}} clip info read through a URL (its note named the file with Path.name)."""
    entry = {"ytb_id": "abc", "duration": {"start_sec": 1, "end_sec": 3}, "bbox": {}}
    (tmp_path / "celebvtext_info.json").write_text(json.dumps({"clips_set1": {"abc_0_0.mp4": entry}}))
    url = upload(tmp_path, "s3://celebv-old/meta")
    entries, _, notes = celebv_text.load_info(f"{url}/celebvtext_info.json")
    assert entries == [("abc_0_0.mp4", "clips_set1", entry)] and notes[0].startswith("celebvtext_info.json: older")
