"""Speech features: the alignment rule, bursts at known frames, T rows for every backend on real speech, windows,
batches, weight resolution (local folder, HF cache) and the missing-weights error.

Wav2vec 2.0 / HuBERT run the real code path (from_pretrained from a folder) with tiny randomly initialised models.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from posetalk_data.media import extract_audio, read_wav  # noqa: E402
from posetalk_data.speech import (HFSpeechBackend, MelBackend, align_by_times, align_to_frames,  # noqa: E402
                                  length_batches, plan_windows, speech_backend)
from posetalk_data.weights import WeightsMissing, state_dict_sha256  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE_WAVS = ["audio/sadtalker_RD_Radio31_000.wav", "audio/hallo_1.wav", "audio/echomimic_echomimic_en.wav",
               "audio/sadtalker_deyu.wav", "paired/styletalk_feifeili_clip1/feifeili_clip1.wav"]


def tiny_model(kind: str, norm: str = "layer", seed: int = 0):
    """2-layer model of the real class; 'layer' feature-extractor norm keeps the CNN features local in time."""
    import torch
    import transformers
    torch.manual_seed(seed)
    cfg_cls, cls = ((transformers.HubertConfig, transformers.HubertModel) if kind == "hubert"
                    else (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model))
    cfg = cfg_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(32,) * 7, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=4,
                  feat_extract_norm=norm, conv_bias=True)
    return cls(cfg)


@pytest.fixture(scope="module")
def speech_wavs(tmp_path_factory) -> list[np.ndarray]:
    if not SHARED.is_dir():
        pytest.skip(f"shared sample media not found at {SHARED}")
    out = tmp_path_factory.mktemp("wav16k")
    clips = []
    for rel in SAMPLE_WAVS:
        wav = out / (Path(rel).stem + ".wav")
        extract_audio(SHARED / "samples" / rel, wav, rate=16_000)    # 44.1 / 48 / 24 kHz, stereo, 24-bit -> 16k
        clips.append(read_wav(wav))
    return clips


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    dirs = {}
    for kind in ("wav2vec2", "hubert"):
        folder = tmp_path_factory.mktemp(kind)
        tiny_model(kind).save_pretrained(folder)
        dirs[kind] = folder
    return dirs


# ---------------------------------------------------------------- the alignment rule
def test_align_50hz_averages_two_frames_per_video_frame():
    feats = np.arange(20, dtype=np.float32)[:, None]          # 50 Hz, centres 10 ms + 20 ms * i
    out = align_to_frames(feats, 50.0, 10)
    assert out.shape == (10, 1)
    np.testing.assert_allclose(out[:, 0], np.arange(10) * 2 + 0.5)


def test_align_interpolates_frames_with_no_feature_and_holds_edges():
    feats = np.array([[0.0], [10.0]])                          # 10 Hz: centres at 0.05 s and 0.15 s
    out = align_to_frames(feats, 10.0, 6)                      # video centres 0.02, 0.06, ..., 0.22 s
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, 5.0, 10.0, 10.0, 10.0])   # frames 1 and 3 own a centre
    out = align_by_times(feats, np.array([0.05, 0.15]), 6)
    assert out[0, 0] == 0.0 and out[-1, 0] == 10.0            # ...edges held, never extrapolated
    mid = align_by_times(np.array([[0.0], [10.0]]), np.array([0.0, 0.2]), 5)
    np.testing.assert_allclose(mid[1:4, 0], [3.0, 5.0, 7.0])   # (k+0.5)/25 between 0 and 0.2 s


def test_align_zero_frames_and_bad_input():
    assert align_to_frames(np.ones((4, 3)), 50.0, 0).shape == (0, 3)
    with pytest.raises(ValueError):
        align_by_times(np.ones((4, 3)), np.ones(3), 2)


def test_windows_cover_the_clip_once():
    for n in (1, 999, 320_000, 320_001, 1_000_000):
        plan = plan_windows(n, core=320_000, context=16_000)
        keeps = [(s, e) for _, _, s, e in plan]
        assert keeps[0][0] == 0 and keeps[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(keeps, keeps[1:]))
        assert all(0 <= a <= s and e <= b <= n and b - a <= 352_000 for a, b, s, e in plan)


def test_length_batches_are_stable_and_bounded():
    batches = length_batches([100, 300, 290, 300, 50], batch_size=2, max_pad=0.1)
    assert batches == [[1, 3], [2], [0], [4]]


# ---------------------------------------------------------------- bursts at known frames
def _burst_clip(n_frames: int, frames: list[int], short_by: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.003, n_frames * 640 - short_by).astype(np.float32)
    loud = base.copy()
    for k in frames:                                           # 20 ms of noise centred on video frame k
        c = k * 640 + 320
        loud[c - 160 : c + 160] += rng.normal(0, 0.5, 320).astype(np.float32)
    return base, loud


@pytest.mark.parametrize("n_frames,short_by", [(137, 77), (50, 0), (61, -333)])   # odd lengths, short and long
def test_mel_burst_lands_on_its_frame(n_frames, short_by):
    for k in (0, 7, n_frames // 2, n_frames - 1):
        _, loud = _burst_clip(n_frames, [k], short_by)
        energy = MelBackend().features(loud, n_frames).astype(np.float32).mean(1)
        assert energy.shape == (n_frames,)
        assert int(energy.argmax()) == k


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_hf_burst_lands_on_its_frame(kind):
    # Layer 0 with a layer-norm CNN sees ~25 ms plus a 4-frame positional conv: local enough to locate a burst.
    backend = HFSpeechBackend.from_model(tiny_model(kind), kind, layers=(0,), normalize=False)
    base, _ = _burst_clip(137, [], 77)
    quiet = backend.features(base, 137).astype(np.float32)
    for k in (0, 5, 68, 136):
        _, loud = _burst_clip(137, [k], 77)
        change = np.abs(backend.features(loud, 137).astype(np.float32) - quiet).mean(1)
        assert int(change.argmax()) == k


# ---------------------------------------------------------------- every backend, every sample clip
def test_every_backend_gives_t_rows_on_real_speech(speech_wavs, model_dirs):
    backends = [speech_backend("mel"), speech_backend("wav2vec2", local_dir=str(model_dirs["wav2vec2"])),
                speech_backend("hubert", local_dir=str(model_dirs["hubert"]), layers=(1, -1))]
    dims = [80, 32, 64]
    for backend, dim in zip(backends, dims):
        for audio in speech_wavs:
            t_full = len(audio) * 25 // 16_000
            for n_frames in (t_full - 3, t_full + 2, 1):      # audio cut, audio padded, one frame
                feats = backend.features(audio, n_frames)
                assert feats.shape == (n_frames, dim) and feats.dtype == np.float16
                assert np.isfinite(feats).all()


def test_mel_windowed_equals_one_pass(speech_wavs):
    audio = speech_wavs[0]
    n = len(audio) * 25 // 16_000
    whole = MelBackend(window_s=600).features(audio, n)
    np.testing.assert_array_equal(MelBackend(window_s=1.0, context_s=0.05).features(audio, n), whole)


def test_hf_windows_and_batches(speech_wavs, model_dirs):
    audio = speech_wavs[1]
    n = len(audio) * 25 // 16_000
    one = HFSpeechBackend("wav2vec2", local_dir=str(model_dirs["wav2vec2"]), window_s=600)
    windowed = HFSpeechBackend("wav2vec2", local_dir=str(model_dirs["wav2vec2"]), window_s=2.0, context_s=0.5)
    a, b = one.features(audio, n).astype(np.float32), windowed.features(audio, n).astype(np.float32)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.25 * np.abs(a).mean()     # same grid; only attention context differs
    batched = windowed.features_batch([(audio, n), (speech_wavs[0], 100), (audio, n)])
    np.testing.assert_allclose(batched[0].astype(np.float32), b, atol=2e-2)   # equal-length windows: no padding
    np.testing.assert_array_equal(batched[0], batched[2])
    assert batched[1].shape == (100, 32)


# ---------------------------------------------------------------- where weights come from
def test_local_dir_versions_hash_the_loaded_weights(model_dirs):
    import transformers
    backend = speech_backend("hubert", local_dir=str(model_dirs["hubert"]))
    v = backend.versions()
    reloaded = transformers.HubertModel.from_pretrained(str(model_dirs["hubert"]))
    assert v["weights_sha256"] == state_dict_sha256(reloaded) and v["source"] == "local_dir"
    assert v["layers"] == [-1] and v["feature_rate_hz"] == 50.0 and v["model"] == "facebook/hubert-base-ls960"


def test_hf_cache_records_revision(tmp_path, model_dirs):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--facebook--wav2vec2-base-960h"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in model_dirs["wav2vec2"].iterdir():
        (snap / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    backend = speech_backend("wav2vec2", cache_dir=str(tmp_path))
    v = backend.versions()
    assert (v["model"], v["revision"], v["source"]) == ("facebook/wav2vec2-base-960h", commit, "hf-cache")


def test_wrong_model_type_is_a_config_error(model_dirs):
    with pytest.raises(ValueError, match="hubert"):
        speech_backend("hubert", local_dir=str(model_dirs["wav2vec2"])).setup()


@pytest.mark.parametrize("options", [{"cache_dir": "EMPTY"}, {"local_dir": "EMPTY/nothing-here"}])
def test_missing_weights_fail_fast_with_the_ways_out(tmp_path, options):
    options = {k: v.replace("EMPTY", str(tmp_path)) for k, v in options.items()}
    for kind, model_id in (("wav2vec2", "facebook/wav2vec2-base-960h"), ("hubert", "facebook/hubert-base-ls960")):
        started = time.perf_counter()
        with pytest.raises(WeightsMissing) as err:
            speech_backend(kind, **options).setup()
        assert time.perf_counter() - started < 1.0
        message = str(err.value)
        for needle in (model_id, f"posetalk-data models pull --only {kind}", "HF_HOME", "speech.local_dir", "offline"):
            assert needle in message
        assert isinstance(err.value, FileNotFoundError)


def test_unknown_backend_and_layers_are_config_errors(model_dirs):
    with pytest.raises(ValueError, match="unknown speech backend"):
        speech_backend("whisper")
    with pytest.raises(ValueError, match="out of range"):
        speech_backend("wav2vec2", local_dir=str(model_dirs["wav2vec2"]), layers=(5,)).setup()


def test_backends_pickle_before_setup(model_dirs):
    import pickle
    backend = speech_backend("wav2vec2", local_dir=str(model_dirs["wav2vec2"]))
    clone = pickle.loads(pickle.dumps(backend))
    assert clone.features(np.zeros(16_000, np.float32), 25).shape == (25, 32)
    assert json.dumps(MelBackend().versions())


def test_wav_and_flac_round_trip(tmp_path):
    """read_wav reads extract_audio's WAV directly as ffmpeg would, and flac_bytes keeps every sample."""
    from posetalk_data.media import _run, safe_path
    from posetalk_data.members import flac_bytes

    if not SHARED.is_dir():
        pytest.skip(f"shared sample media not found at {SHARED}")
    wav = tmp_path / "a.wav"
    extract_audio(SHARED / "samples" / SAMPLE_WAVS[0], wav, rate=16_000, duration=2.0)
    direct = read_wav(wav)
    via_ffmpeg = np.frombuffer(_run(["-i", safe_path(wav), "-f", "s16le", "-ac", "1", "-"], "read"), np.int16) / 32768
    assert len(direct) == 32_000 and np.array_equal(direct, via_ffmpeg.astype(np.float32))
    flac = tmp_path / "a.flac"
    flac.write_bytes(flac_bytes(direct, 16_000))
    assert np.array_equal(read_wav(flac), direct)   # lossless, through ffmpeg's FLAC decoder
