"""Pose+gaze generation from speech and/or a text prompt with a trained PLD run.

Conditions are computed with exactly the feature extractors the training manifest recorded (backend, settings,
weights hash): a different extractor would feed the model features it never saw, so a mismatch is an error.

Any audio length works: the sequence is cut into windows of the model's length overlapping by `overlap` frames,
all windows are sampled in one batch, and each window is blended into the sequence with a linear crossfade over the
overlap. Angles are absolute, so they blend directly; the translation/scale channels are window-relative (see
posetalk_models.data.windows) and are chained onto the sequence first: a window starting at frame a continues from the
sequence's position and scale at a. The output's translation channels are relative to the first frame.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from posetalk_data.media import extract_audio, nonfinite_samples, read_wav
from posetalk_data.schema import AUDIO_RATE, VIDEO_FPS
from posetalk_data.speech import SpeechBackend, speech_backend
from posetalk_data.text_encoders import TextEncoder, text_encoder

from posetalk_models.data.windows import CHANNELS, denormalise
from posetalk_models.nets.pld import MODES, Mode, PoseLatentDiffusion
from posetalk_models.nets.vae import PoseVAE
from posetalk_models.runs import load_run

# where the weights were found, not what they are: the weights hash decides that
LOCATION_KEYS = {"source", "revision"}
# Runs trained before MiniLM ran on transformers recorded sentence-transformers as its encoder: the same weights (the
# same recorded hash), pooling and float16 rows, so only the keys naming the implementation differ.
LEGACY_MINILM = "sentence-transformers"
MINILM_IMPLEMENTATION = {"encoder", "sentence_transformers", "transformers", "pooling", "max_tokens"}


def load_pld(run: str | Path, *, device: str = "cpu", flag: str = "") -> tuple[PoseLatentDiffusion, PoseVAE, dict]:
    """(PLD, its VAE, the checkpoint sidecar) in eval mode from a PLD run folder (or one of its checkpoints)."""
    loaded = load_run(run, kinds=("pld",), device=device, flag=flag)
    return loaded.model, loaded.stages["vae"], loaded.sidecar


class FeatureMismatch(ValueError):
    """Generation would compute conditions unlike the training data's."""


# ------------------------------------------------------------------ conditions, as the training data had them
def speech_backend_for(record: dict, *, local_dir: str | None = None) -> SpeechBackend:
    """The speech backend a manifest's versions record describes (weights from `local_dir` or the HF cache)."""
    opts = {"window_s": record["window_s"], "context_s": record["context_s"]}
    if record["backend"] == "mel":
        return speech_backend("mel", n_mels=record["n_mels"], fmin=record["fmin"], fmax=record["fmax"], **opts)
    return speech_backend(record["backend"], model=record["model"], revision=record.get("revision"),
                          local_dir=local_dir, layers=tuple(record["layers"]), normalize=record["normalize"], **opts)


def text_encoder_for(record: dict, *, local_path: str | None = None) -> TextEncoder:
    if record["encoder"] == "open_clip":
        return text_encoder("clip", model=record["model"], pretrained=record["pretrained"], local_path=local_path)
    if record["encoder"] in ("minilm", LEGACY_MINILM):
        return text_encoder("minilm", local_dir=local_path)
    raise FeatureMismatch(f"the run's text encoder {record['encoder']!r} is unknown to this posetalk version")


def check_same(role: str, recorded: dict, actual: dict) -> None:
    if LEGACY_MINILM in (recorded.get("encoder"), actual.get("encoder")):
        # the same rows, once computed by the sentence-transformers package: all but the implementation compared
        recorded, actual = ({k: v for k, v in versions.items() if k not in MINILM_IMPLEMENTATION}
                            for versions in (recorded, actual))
    keys = (set(recorded) | set(actual)) - LOCATION_KEYS
    diff = {k: (recorded.get(k), actual.get(k)) for k in sorted(keys) if recorded.get(k) != actual.get(k)}
    if diff:
        lines = "; ".join(f"{k}: trained with {a!r}, here {b!r}" for k, (a, b) in diff.items())
        raise FeatureMismatch(f"{role} features differ from the training data's ({lines}). Provide the same "
                              f"model weights (--speech-weights / --text-weights) and package versions.")


def run_speech_backend(sidecar: dict, weights: str | None = None) -> SpeechBackend:
    """The speech backend a run was trained with, checked against its record (FeatureMismatch otherwise)."""
    record = sidecar["features"]["speech"]["versions"]
    backend = speech_backend_for(record, local_dir=weights)
    check_same("speech", record, backend.versions())
    return backend


def run_text_encoder(sidecar: dict, weights: str | None = None) -> TextEncoder:
    """The text encoder a run was trained with, checked against its record (FeatureMismatch otherwise)."""
    record = sidecar["features"]["text"]["versions"]
    encoder = text_encoder_for(record, local_path=weights)
    check_same("text", record, encoder.versions())
    return encoder


def audio_samples(path: str | Path) -> np.ndarray:
    """Any audio or video file -> 16 kHz mono float32 (ffmpeg). A ValueError for samples that are not numbers (NaN
    or infinite, as a damaged float WAV may hold): no encoder can mux them, and they would turn into noise or
    silence unseen."""
    bad = nonfinite_samples(path)
    if bad:
        raise ValueError(f"{path}: {bad} audio samples are not numbers (NaN or infinite); repair the audio or export "
                         "it again (e.g. as 16-bit PCM)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        extract_audio(path, wav, rate=AUDIO_RATE)
        return read_wav(wav)


def frames_of(audio: np.ndarray) -> int:
    """Video frames (25 fps) of 16 kHz audio: round(duration x 25), halves up."""
    return (2 * len(audio) * VIDEO_FPS + AUDIO_RATE) // (2 * AUDIO_RATE)


def conditions(sidecar: dict, audio: np.ndarray | None, text: str | None, *, n_frames: int | None = None,
               speech_weights: str | None = None, text_weights: str | None = None
               ) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """(speech (n, D) float32 or None, text embedding (D,) or None, n frames) with the run's recorded extractors."""
    features = sidecar["features"]
    if n_frames is None:
        if audio is None:
            raise ValueError("give the audio, or a number of frames for text-only generation")
        n_frames = frames_of(audio)
    if n_frames < 1:
        raise ValueError("the audio is shorter than one video frame (40 ms)")
    speech = emb = None
    if audio is not None and "speech" in features:
        speech = run_speech_backend(sidecar, speech_weights).features(audio, n_frames).astype(np.float32)
    if text is not None and "text" in features:
        emb = run_text_encoder(sidecar, text_weights).encode([text])[0].astype(np.float32)
    return speech, emb, n_frames


# ------------------------------------------------------------------ modes: which conditions steer the pose
NEEDS = {"audio": {"speech"}, "text": {"text"}, "both": {"speech", "text"}}   # mode -> the features it reads


def pose_mode(text: str | None, mode: str | None) -> Mode:
    """The conditioning mode asked for (default: both with a prompt, else audio); ValueError for an unknown mode or
    a text mode without a prompt."""
    mode = mode or ("both" if text else "audio")
    if mode not in MODES:
        raise ValueError(f"--mode {mode}: choose audio, text or both")
    if mode in ("text", "both") and not text:
        raise ValueError(f"PLD mode {mode} needs a prompt")
    return mode


def run_modes(sidecar: dict) -> list[str]:
    """The conditioning modes a run's features allow (a run without text features has no text modes)."""
    have = set(sidecar["features"])
    return [m for m in MODES if NEEDS[m] <= have]


def check_mode(sidecar: dict, mode: str) -> None:
    """A ValueError naming the mode to use when the run was trained without the features `mode` reads."""
    missing = NEEDS[mode] - set(sidecar["features"])
    if "speech" in missing:
        raise ValueError("the PLD run was trained without speech features: use --mode text")
    if "text" in missing:
        raise ValueError("the PLD run was trained without text features: use --mode audio")


def pld_poses(pld: PoseLatentDiffusion, vae: PoseVAE, sidecar: dict, audio: np.ndarray | None, n: int,
              text: str | None, mode: Mode, *, guidance: float = 2.0, steps: int = 50, overlap: int | None = None,
              seed: int = 0, speech_weights: str | None = None, text_weights: str | None = None) -> np.ndarray:
    """The (n, C) pose+gaze sequence of a loaded PLD run (load_pld) for 16 kHz `audio` and/or the prompt `text`,
    its conditions computed with the run's recorded extractors; the mode is checked against the run's features
    before any extractor is loaded."""
    check_mode(sidecar, mode)
    speech, emb, n = conditions(sidecar, None if mode == "text" else audio, None if mode == "audio" else text,
                                n_frames=n, speech_weights=speech_weights, text_weights=text_weights)
    return generate_poses(pld, vae, sidecar["stats"], n, speech, emb, mode=mode, guidance=guidance, steps=steps,
                          overlap=overlap, seed=seed)[0]


# ------------------------------------------------------------------ windows and stitching
def window_starts(n: int, window: int, overlap: int) -> list[int]:
    """Starts of windows covering n frames, `overlap` frames shared by neighbours (the last one ends at n)."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in 0..{window - 1}, got {overlap}")
    if n <= window:
        return [0]
    starts = list(range(0, n - window, window - overlap))
    return starts + [n - window]


def chain_translation(window: np.ndarray, seq: np.ndarray, start: int) -> np.ndarray:
    """Window-relative dx, dy, dlog_s (channels 7..9) -> relative to the sequence's first frame."""
    out = window.copy()
    if start == 0 or window.shape[1] <= 7:
        return out
    x0, ds0 = seq[start, 7:9], seq[start, 9]
    out[:, 7:9] = x0 + window[:, 7:9] * np.exp(ds0)
    out[:, 9] = ds0 + window[:, 9]
    return out


def stitch(windows: np.ndarray, starts: list[int], n: int) -> np.ndarray:
    """(K, T, C) windows at `starts` -> (n, C), each crossfaded in over its overlap with what came before."""
    t, c = windows.shape[1:]
    seq = np.zeros((max(n, t), c), np.float32)
    end = 0
    for window, start in zip(windows, starts):
        window = chain_translation(window, seq, start)
        shared = max(end - start, 0)
        ramp = (np.arange(1, shared + 1, dtype=np.float32) / (shared + 1))[:, None]
        seq[start:start + shared] = (1 - ramp) * seq[start:start + shared] + ramp * window[:shared]
        seq[start + shared:start + t] = window[shared:]
        end = start + t
    return seq[:n]


def windows_of(features: np.ndarray, starts: list[int], window: int) -> np.ndarray:
    """(n, D) -> (K, window, D); a sequence shorter than a window is padded with its last row (as in training)."""
    idx = np.minimum(np.asarray(starts)[:, None] + np.arange(window)[None], len(features) - 1)
    return features[idx]


@torch.no_grad()
def generate_poses(pld: PoseLatentDiffusion, vae: PoseVAE, stats: dict, n_frames: int,
                   speech: np.ndarray | None = None, text: np.ndarray | None = None, *, mode: Mode = "both",
                   guidance: float = 2.0, steps: int = 50, overlap: int | None = None, seed: int = 0,
                   samples: int = 1) -> np.ndarray:
    """(samples, n_frames, C) float32 pose+gaze(+translation) in data units (degrees, face-scale units)."""
    window = pld.cfg.window
    overlap = window // 2 if overlap is None else overlap
    starts = window_starts(n_frames, window, overlap)
    device = pld.alphas_cumprod.device
    k = len(starts)
    audio = None if speech is None else torch.from_numpy(windows_of(speech, starts, window)).to(device)
    text_t = None if text is None else torch.from_numpy(text).to(device)[None].expand(k, -1)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for _ in range(samples):
        z = pld.sample(k, text_t, audio, mode=mode, guidance=guidance, steps=steps, generator=gen)
        poses = denormalise(vae.decode(z, window), stats).float().cpu().numpy()
        out.append(stitch(poses, starts, n_frames))
    return np.stack(out)


def plot_poses(poses: np.ndarray, out_png: str | Path, title: str = "") -> Path:
    """Head yaw/pitch/roll and the two eyes' gaze over time (seconds at 25 fps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(poses)) / VIDEO_FPS
    fig, (head, gaze) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    for i in range(3):
        head.plot(t, poses[:, i], label=CHANNELS[i])
    for i in range(3, 7):
        gaze.plot(t, poses[:, i], label=CHANNELS[i], lw=0.8)
    head.set_ylabel("head (deg)")
    gaze.set_ylabel("gaze (deg)")
    gaze.set_xlabel("time (s)")
    for ax in (head, gaze):
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax.grid(alpha=0.3)
    head.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)
