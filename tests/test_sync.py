"""Audio-video offset (posetalk_data.avsync, stages/sync.py): measured, recorded, corrected, voice-over flagged.

Real talking clips are built with their audio moved by known whole frames (video stream copied untouched, audio
re-encoded as PCM), beside the originals and a clip whose audio is another person's speech."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from posetalk_data import avsync
from posetalk_data.config import load_config, output_settings
from posetalk_data.media import audio_moved_copy, read_wav
from posetalk_data.schema import VideoSpec

SHIFTS = {"d11": (-3, 5), "feifeili": (-6, 2)}   # frames the copies' audio is moved (positive: later)


@pytest.fixture(scope="session")
def sync_specs(samples: Path, tmp_path_factory) -> list[VideoSpec]:
    """The two originals, copies of them with their audio moved by SHIFTS (video stream copied), and the child's
    face with a radio speaker's voice."""
    root = tmp_path_factory.mktemp("sync_in")
    d11 = samples / "videos" / "liveportrait_d11.mp4"
    pair = samples / "paired" / "styletalk_feifeili_clip1"
    specs = [VideoSpec("folder", "d11", str(d11)),
             VideoSpec("folder", "feifeili", str(pair / "feifeili_clip1.mp4"), str(pair / "feifeili_clip1.wav"))]
    for clip, video, audio in (("d11", d11, None), ("feifeili", pair / "feifeili_clip1.mp4",
                                                      pair / "feifeili_clip1.wav")):
        for shift in SHIFTS[clip]:
            audio_moved_copy(video, root / f"{clip}_{shift:+d}.mkv", shift, audio=audio)
            specs.append(VideoSpec("folder", f"{clip}_{shift:+d}", str(root / f"{clip}_{shift:+d}.mkv")))
    audio_moved_copy(d11, root / "d11_voice_over.mkv", 0, audio=samples / "audio" / "sadtalker_RD_Radio31_000.wav")
    specs.append(VideoSpec("folder", "d11_voice_over", str(root / "d11_voice_over.mkv")))
    return specs


@pytest.fixture(scope="session")
def sync_build(sync_specs, tmp_path_factory) -> Path:
    from posetalk_data.build import build

    out = tmp_path_factory.mktemp("sync_build") / "build"
    build(sync_specs, out, load_config(None, ["facetrack.crop_size=96"]), source="folder", root=None, workers=0)
    return out


def rows(build: Path) -> dict[str, dict]:
    return {r["video_id"]: r for r in pq.read_table(build / "samples.parquet").to_pylist()}


def members(build: Path, key: str) -> dict[str, bytes]:
    for shard in sorted((build / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            found = {Path(m.name).name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()
                     if m.name.startswith(key + ".")}
        if found:
            return found
    raise KeyError(key)


def audio_lag(a: np.ndarray, b: np.ndarray) -> int:
    """Samples b lags a by (cross-correlation peak over +-1 s)."""
    n = min(len(a), len(b))
    spectrum = np.fft.rfft(b[:n], 2 * n) * np.conj(np.fft.rfft(a[:n], 2 * n))
    corr = np.fft.irfft(spectrum, 2 * n)
    lags = np.r_[0:16000, -16000:0]
    return int(lags[np.argmax(corr[lags])])


def flac_samples(data: bytes, folder: Path) -> np.ndarray:
    path = folder / "clip.flac"
    path.write_bytes(data)
    return read_wav(path)


def test_offset_moves_with_the_audio_and_the_correction_lines_it_up(sync_build, tmp_path):
    table = rows(sync_build)
    for clip, shifts in SHIFTS.items():
        original = table[clip]
        assert original["av_sync_method"] == "lips-envelope"
        assert original["av_sync_confidence"] >= 2.5, original       # a real talking clip: confident
        assert "voice_over" not in original["flags"]
        for shift in shifts:
            copy = table[f"{clip}_{shift:+d}"]
            # positive = the audio is late: delaying the audio by `shift` frames adds `shift` to the offset
            assert abs(copy["av_offset_frames"] - original["av_offset_frames"] - shift) <= 1, (copy, original)
            assert copy["av_shift_applied_frames"] == copy["av_offset_frames"] != 0   # within the limit: moved
            left = copy["av_offset_frames"] - copy["av_shift_applied_frames"]
            assert abs(left - (original["av_offset_frames"] - original["av_shift_applied_frames"])) <= 1
            assert not {"voice_over", "av_sync_low", "av_offset_large"} & set(copy["flags"])
            # what the shards hold lines up too: the corrected copy's FLAC and mel rows against the original's
            a, b = members(sync_build, original["key"]), members(sync_build, copy["key"])
            lag = audio_lag(flac_samples(a["audio.flac"], tmp_path), flac_samples(b["audio.flac"], tmp_path))
            assert abs(lag) <= 640, lag
            mel_a, mel_b = (np.load(io.BytesIO(m["mel.npy"])).astype(np.float32).mean(1) for m in (a, b))
            scores = avsync.lagged_r(mel_a[3:-3] - mel_a.mean(), mel_b - mel_b.mean(), 3)
            assert abs(int(np.nanargmax(scores)) - 3) <= 1
            quality = json.loads(b["meta.json"])["quality"]
            assert quality["av_offset_frames"] == copy["av_offset_frames"]
            assert quality["av_shift_applied_frames"] == copy["av_shift_applied_frames"]


def test_voice_over_is_flagged_and_in_sync_clips_are_not(sync_build):
    table = rows(sync_build)
    voice_over = table["d11_voice_over"]
    assert {"voice_over", "av_sync_low"} <= set(voice_over["flags"]), voice_over
    assert voice_over["av_shift_applied_frames"] == 0                 # no confidence: the audio is left alone
    others = [r for k, r in table.items() if k != "d11_voice_over"]
    assert voice_over["av_sync_confidence"] < min(r["av_sync_confidence"] for r in others)
    assert not any("voice_over" in r["flags"] for r in others)


def test_manifest_filter_reads_the_offset_columns(sync_build, tmp_path):
    from typer.testing import CliRunner

    from posetalk_data.cli import app

    where = "abs(av_offset_frames - av_shift_applied_frames) <= 1 and av_sync_confidence > 2.5"
    result = CliRunner().invoke(app, ["manifest", "filter", str(sync_build), "--where", where,
                                      "--out", str(tmp_path / "synced.json")])
    assert result.exit_code == 0, result.output
    kept = {r["video_id"] for r in pq.read_table(sync_build / "samples.parquet").to_pylist()
            if abs(r["av_offset_frames"] - r["av_shift_applied_frames"]) <= 1 and r["av_sync_confidence"] > 2.5}
    manifest = json.loads((tmp_path / "synced.json").read_text())
    assert manifest["counts"]["samples"] == len(kept) and "d11_voice_over" not in kept and len(kept) >= 6


def test_drop_voice_over_setting_drops_the_clip(sync_specs, tmp_path):
    from posetalk_data.build import build

    spec = next(s for s in sync_specs if s.video_id == "d11_voice_over")
    out = tmp_path / "build"
    build([spec], out, load_config(None, ["facetrack.crop_size=96", "sync.drop_voice_over=true"]), source="folder",
          root=None, workers=0)
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    assert [f["stage"] for f in failures] == ["sync"] and "voice_over" in failures[0]["reason"]
    assert pq.read_table(out / "samples.parquet").num_rows == 0


def synthetic(lips: np.ndarray, late: int, seed: int) -> np.ndarray:
    """Noise whose loudness follows `lips`, heard `late` frames after them, with `search` frames of room."""
    rng = np.random.default_rng(seed)
    gain = np.repeat(np.r_[np.full(15 + late, lips.min()), lips, np.full(15 - late, lips.min())], avsync.HOP)
    return rng.standard_normal(len(gain)) * gain


def test_measure_on_synthetic_signals():
    rng = np.random.default_rng(0)
    lips = np.convolve(rng.random(200), np.ones(4) / 4, "same") * 0.3 + 0.2    # a mouth at syllable rate
    for late in (-6, 0, 4, 15):
        found = avsync.measure(lips, synthetic(lips, late, 1), 15)
        assert found.offset == late and found.confidence > 5
    other = np.convolve(rng.random(200), np.ones(4) / 4, "same") * 0.3 + 0.2
    assert avsync.measure(lips, synthetic(other, 0, 2), 15).confidence < 3
    assert avsync.measure(lips, np.zeros((200 + 30) * avsync.HOP), 15).offset is None   # silence: no measure


def test_sync_settings_are_part_of_the_staging_fingerprint():
    assert output_settings(load_config(None, ["sync.max_shift_frames=3"])) != output_settings(load_config(None))
    assert output_settings(load_config(None))["sync"]["search_frames"] == 15


def test_report_shows_the_offsets(sync_build, tmp_path):
    from posetalk_data.report import write_report

    page = write_report(tmp_path, manifest_path=sync_build / "manifest.json", max_thumbnails=0).read_text()
    section = page[page.index('id="av-sync"'):]
    section = section[: section.index("</section>")]
    assert 'id="fig-av-sync"' in section and "<td>clips measured</td><td class=n>7</td>" in section
    assert "<td>voice_over</td><td class=n>1</td>" in section


def test_voice_over_rule_needs_speech_and_enough_seconds_for_the_correlation():
    from posetalk_data.config import SyncConfig
    from posetalk_data.stages.sync import SyncStage

    stage = SyncStage(SyncConfig(), silence_dbfs=-60)
    low = avsync.SyncMeasure(offset=3, confidence=1.2, peak_r=0.2, scores=np.zeros(31))
    talking = {"av_speech_share": 0.8, "av_mouth_motion": 0.15}
    assert stage.flags(low, talking, frames=150) == ["av_sync_low", "voice_over"]       # 6 s, low: voice-over
    assert stage.flags(low, talking, frames=75) == ["av_sync_low"]                      # 3 s: too short to tell
    assert stage.flags(low, {**talking, "av_mouth_motion": 0.01}, frames=75) == ["av_sync_low", "voice_over"]
    assert stage.flags(low, {**talking, "av_speech_share": 0.1}, frames=150) == ["av_sync_low"]   # no speech
    sure_far = avsync.SyncMeasure(offset=9, confidence=4.0, peak_r=0.6, scores=np.zeros(31))
    assert stage.flags(sure_far, talking, frames=150) == ["av_offset_large"] and stage.shift(sure_far) == 0
