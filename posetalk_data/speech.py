"""Speech features with exactly one row per video frame: log-mel, wav2vec 2.0 or HuBERT hidden states.

Alignment rule (`align_by_times`, the one rule every backend uses). Video frame k covers [k/fps, (k+1)/fps) s.
Its row is the mean of the feature frames whose time centre lies in that interval. A video frame with none
(a feature rate below the frame rate, or the clip's edges) takes the features linearly interpolated at its own
centre (k + 0.5)/fps, held constant before the first and after the last feature frame. A feature frame's centre
is the middle of the samples it sees: (first sample + receptive field / 2) / 16000 s. wav2vec 2.0 and HuBERT see
400 samples with a 320-sample stride (50 Hz: centres at 12.5 ms + 20 ms * i, so two frames per video frame);
the log-mel sees 400 samples with a 160-sample hop (100 Hz: 12.5 ms + 10 ms * i, so four frames per video frame).

A clip's audio is taken to last exactly T/25 s: it is zero-padded or cut to T * 640 samples first.

Long clips run in windows so memory does not grow with clip length: each window's core (`window_s`, 20 s) is
run with `context_s` (1 s) of real audio on each side, and only feature frames whose centre lies in the core are
kept. Window edges sit on the model's stride, so the kept frames lie on one time grid for the whole clip.
Windows from several clips (`features_batch`) are run together, longest first, padded to the longest in the
batch when within `max_pad` of it. The batches are a pure function of the input list (stable order), so the
same list gives the same bytes. Stored rows are float16.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .weights import WeightsMissing, has_hf_weights, hf_cache_dir, hf_snapshot, missing_message, state_dict_sha256

SAMPLE_RATE = 16_000
ALIGNMENT = "mean of feature frames centred in [k/fps, (k+1)/fps), else linear interpolation at (k+0.5)/fps"


# ---------------------------------------------------------------- alignment (plain functions of arrays)
def align_by_times(features: np.ndarray, times: np.ndarray, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """(N, D) features at ascending centre times (s) -> (n_frames, D) float32 by the module's alignment rule."""
    feats = np.asarray(features, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if len(feats) != len(times) or np.any(np.diff(times) < 0):
        raise ValueError(f"need ascending times, one per feature frame ({len(feats)} frames, {len(times)} times)")
    out = np.zeros((n_frames, feats.shape[1]))
    if n_frames == 0:
        return out.astype(np.float32)
    if len(feats) == 0:
        raise ValueError("no feature frames to align")
    k = np.floor(times * fps + 1e-9).astype(np.int64)      # epsilon: a centre exactly on a boundary starts a frame
    inside = (k >= 0) & (k < n_frames)
    rows, starts, counts = np.unique(k[inside], return_index=True, return_counts=True)   # times ascend
    if len(rows):
        out[rows] = np.add.reduceat(feats[inside], starts, axis=0) / counts[:, None]
    filled = np.zeros(n_frames, bool)
    filled[rows] = True
    if not filled.all():
        out[~filled] = _interp_rows(feats, times, (np.flatnonzero(~filled) + 0.5) / fps)
    return out.astype(np.float32)


def align_to_frames(features: np.ndarray, feature_rate: float, n_frames: int, fps: float = 25.0,
                    offset_s: float | None = None) -> np.ndarray:
    """Features at a constant rate (Hz), the first centred at `offset_s` (default half a feature frame)."""
    offset = 0.5 / feature_rate if offset_s is None else offset_s
    times = offset + np.arange(len(features)) / feature_rate
    return align_by_times(features, times, n_frames, fps)


def _interp_rows(feats: np.ndarray, times: np.ndarray, query: np.ndarray) -> np.ndarray:
    hi = np.clip(np.searchsorted(times, query), 0, len(times) - 1)
    lo = np.clip(hi - 1, 0, len(times) - 1)
    span = times[hi] - times[lo]
    w = np.clip(np.divide(query - times[lo], span, out=np.zeros_like(query), where=span > 0), 0.0, 1.0)
    return feats[lo] * (1 - w)[:, None] + feats[hi] * w[:, None]


def fit_length(audio: np.ndarray, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Zero-pad or cut mono 16 kHz audio to exactly n_frames / fps seconds."""
    n = int(round(n_frames * SAMPLE_RATE / fps))
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)[:n]
    return np.pad(audio, (0, n - len(audio)))


def plan_windows(n_samples: int, core: int, context: int) -> list[tuple[int, int, int, int]]:
    """(run_start, run_stop, keep_start, keep_stop) sample ranges covering [0, n_samples) with core-sized keeps."""
    return [(max(0, s - context), min(n_samples, s + core + context), s, min(s + core, n_samples))
            for s in range(0, max(n_samples, 1), core)]


def length_batches(lengths: list[int], batch_size: int, max_pad: float) -> list[list[int]]:
    """Indices grouped longest first; a batch takes the next window while its padding stays within max_pad."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[i] >= (1 - max_pad) * lengths[batches[-1][0]]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# ---------------------------------------------------------------- backends
class SpeechBackend:
    """Common interface. Construction is cheap and picklable; `setup()` loads weights once per worker."""

    name = "base"
    stride = 320            # samples between feature frames
    receptive_field = 400   # samples one feature frame sees

    def __init__(self, *, window_s: float = 20.0, context_s: float = 1.0, batch_size: int = 8,
                 max_pad: float = 0.15, fps: float = 25.0):
        self.window_s, self.context_s, self.fps = window_s, context_s, fps
        self.batch_size, self.max_pad = batch_size, max_pad

    @property
    def member_name(self) -> str:
        return f"{self.name}.npy"

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def check(self) -> None:
        """Raise WeightsMissing at once if setup() would; loads nothing."""

    def setup(self) -> None:
        """Load weights (idempotent)."""

    def versions(self) -> dict:
        return {"backend": self.name, "feature_rate_hz": SAMPLE_RATE / self.stride, "alignment": ALIGNMENT,
                "window_s": self.window_s, "context_s": self.context_s, "dtype": "float16"}

    def features(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """16 kHz mono float audio of a clip with n_frames video frames -> float16 (n_frames, dim)."""
        return self.features_batch([(audio, n_frames)])[0]

    def features_batch(self, items: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        self.setup()
        clips = [self._prepare(self._pad_to_field(fit_length(a, n, self.fps))) for a, n in items]
        core, context = self._grid(self.window_s), self._grid(self.context_s)
        windows = [(c, *w) for c, clip in enumerate(clips) for w in plan_windows(len(clip), core, context)]
        outs = self._run([clips[c][a:b] for c, a, b, _, _ in windows])
        kept: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in clips]
        for (c, a, _, s, e), out in zip(windows, outs):
            centres = a + np.arange(len(out)) * self.stride + self.receptive_field / 2
            keep = (centres >= s) & (centres < e)
            kept[c].append((out[keep], centres[keep] / SAMPLE_RATE))
        return [align_by_times(np.concatenate([f for f, _ in parts]), np.concatenate([t for _, t in parts]),
                               n_frames, self.fps).astype(np.float16)          # every clip has >= 1 window
                for (_, n_frames), parts in zip(items, kept)]

    # -- helpers for subclasses
    def _grid(self, seconds: float) -> int:
        """Seconds -> samples on the feature grid (a multiple of the stride, at least one stride)."""
        return max(1, round(seconds * SAMPLE_RATE / self.stride)) * self.stride

    def _pad_to_field(self, audio: np.ndarray) -> np.ndarray:
        return np.pad(audio, (0, max(0, self.receptive_field - len(audio))))   # else no feature frame at all

    def _prepare(self, audio: np.ndarray) -> np.ndarray:
        return audio

    def _n_out(self, n_samples: int) -> int:
        return (n_samples - self.receptive_field) // self.stride + 1

    def _run(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(windows)
        for batch in length_batches([len(w) for w in windows], self.batch_size, self.max_pad):
            for i, feats in zip(batch, self._forward([windows[i] for i in batch])):
                out[i] = feats
        return out

    def _forward(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Float32 (n_out(len), dim) features per window."""
        raise NotImplementedError


class MelBackend(SpeechBackend):
    """80-bin log-mel, no weights: 25 ms Hann window (400 samples, zero-padded to a 512-point FFT), 10 ms hop
    (160), no centre padding, power spectrum, HTK-scale triangular filters over fmin..fmax (0-8000 Hz),
    natural log of max(energy, 1e-10). Silence is ln(1e-10) = -23.0."""

    name = "mel"
    stride, receptive_field, n_fft = 160, 400, 512

    def __init__(self, n_mels: int = 80, fmin: float = 0.0, fmax: float = 8000.0, **window_opts):
        super().__init__(**window_opts)
        self.n_mels, self.fmin, self.fmax = n_mels, fmin, fmax
        self._filters: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.n_mels

    def setup(self) -> None:
        if self._filters is None:
            self._filters = mel_filters(self.n_mels, self.n_fft, SAMPLE_RATE, self.fmin, self.fmax)

    def versions(self) -> dict:
        return {**super().versions(), "n_mels": self.n_mels, "window": "hann 400", "hop": self.stride,
                "n_fft": self.n_fft, "fmin": self.fmin, "fmax": self.fmax, "mel_scale": "htk",
                "log": "ln(max(power, 1e-10))"}

    def _forward(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        hann = np.hanning(self.receptive_field + 1)[:-1]            # periodic Hann
        out = []
        for w in windows:
            frames = np.lib.stride_tricks.sliding_window_view(w.astype(np.float64), self.receptive_field)
            power = np.abs(np.fft.rfft(frames[:: self.stride] * hann, n=self.n_fft)) ** 2
            out.append(np.log(np.maximum(power @ self._filters.T, 1e-10)).astype(np.float32))
        return out


def mel_filters(n_mels: int, n_fft: int, rate: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) HTK-scale triangular filters, peak 1, not area-normalised."""
    to_mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)        # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2) / 2595.0) - 1.0)
    bins = np.arange(n_fft // 2 + 1) * rate / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))


class HFSpeechBackend(SpeechBackend):
    """wav2vec 2.0 or HuBERT hidden states from transformers, weights only from local files.

    `layers` index `hidden_states` (0 = the transformer's input, i.e. projected CNN features plus the positional
    convolution; n = the last layer; negative from the end) and are concatenated: dim = hidden_size * len(layers).
    Default (-1,): the last layer, as FaceFormer / CodeTalker (wav2vec 2.0) and GeneFace (HuBERT) use it.
    The audio is normalised to zero mean, unit variance per clip when the model's preprocessor_config.json says
    do_normalize (both default checkpoints do), as Wav2Vec2FeatureExtractor would. CUDA + fp16 when available."""

    DEFAULT_MODELS = {"wav2vec2": "facebook/wav2vec2-base-960h", "hubert": "facebook/hubert-base-ls960"}

    def __init__(self, kind: str = "wav2vec2", model: str | None = None, *, revision: str | None = None,
                 local_dir: str | None = None, cache_dir: str | None = None, layers: tuple[int, ...] = (-1,),
                 normalize: bool | None = None, device: str = "auto", **window_opts):
        if kind not in self.DEFAULT_MODELS:
            raise ValueError(f"speech backend kind must be one of {sorted(self.DEFAULT_MODELS)}, not {kind!r}")
        super().__init__(**window_opts)
        self.name, self.model_id = kind, model or self.DEFAULT_MODELS[kind]
        self.revision, self.local_dir, self.cache_dir = revision, local_dir, cache_dir
        self.layers, self.normalize, self.device = tuple(layers), normalize, device
        self._model = None
        self._info: dict = {}

    @classmethod
    def from_model(cls, model, kind: str, **options) -> "HFSpeechBackend":
        """Wrap an already built model (random init for benchmarks); versions() then says 'in-memory'."""
        backend = cls(kind, model=options.pop("model_id", "in-memory"), **options)
        backend._adopt(model, source="in-memory", revision=None, folder=None)
        return backend

    @property
    def dim(self) -> int:
        return self._model.config.hidden_size * len(self.layers)

    def check(self) -> tuple[Path, str | None, str]:
        """(folder, revision, source) of the weights, or WeightsMissing at once (file lookups only)."""
        looked = []
        if self.local_dir:
            folder = Path(self.local_dir).expanduser()
            if has_hf_weights(folder):
                return folder, None, "local_dir"
            looked.append(f"local_dir {folder} (needs config.json + model.safetensors or pytorch_model.bin)")
        else:
            found = hf_snapshot(self.model_id, revision=self.revision, cache_dir=self.cache_dir)
            if found:
                return found[0], found[1], "hf-cache"
            looked.append(f"Hugging Face cache {hf_cache_dir(self.cache_dir)}")
        raise WeightsMissing(missing_message(f"Speech model ({self.name})", self.model_id, looked,
                                             "speech.local_dir", pull=self.name))

    def setup(self) -> None:
        if self._model is not None:
            return
        folder, revision, source = self.check()
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type != self.name:
            raise ValueError(f"{folder} holds a {model_type!r} model, but the speech backend is {self.name!r}")
        import transformers
        cls = transformers.HubertModel if self.name == "hubert" else transformers.Wav2Vec2Model
        self._adopt(cls.from_pretrained(str(folder), local_files_only=True), source=source, revision=revision,
                    folder=folder)

    def _adopt(self, model, *, source: str, revision: str | None, folder: Path | None) -> None:
        import torch
        cfg = model.config
        n = cfg.num_hidden_layers
        if not all(-(n + 1) <= layer <= n for layer in self.layers):
            raise ValueError(f"speech layers {self.layers} out of range for {n} hidden layers (0..{n}, or negative)")
        sha = state_dict_sha256(model)          # before any fp16 cast: the weights as loaded
        self.stride = int(np.prod(cfg.conv_stride))
        self.receptive_field = _receptive_field(cfg.conv_kernel, cfg.conv_stride)
        if self.normalize is None:
            pre = folder / "preprocessor_config.json" if folder else None
            self.normalize = json.loads(pre.read_text()).get("do_normalize", True) if pre and pre.is_file() else True
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        self._dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self._device = device
        self._mask = cfg.feat_extract_norm == "layer"   # group-norm models were trained without attention masks
        self._model = model.eval().to(device=device, dtype=self._dtype)
        self._info = {"model": self.model_id, "revision": revision, "weights_sha256": sha, "source": source}

    def versions(self) -> dict:
        self.setup()
        return {**super().versions(), **self._info, "layers": list(self.layers), "normalize": self.normalize,
                "weights_hash": "sha256 over the state dict (name, dtype, shape, bytes; sorted by name)"}

    def _prepare(self, audio: np.ndarray) -> np.ndarray:
        if not self.normalize:
            return audio
        return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)

    def _forward(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        import torch
        longest = max(len(w) for w in windows)
        x = np.zeros((len(windows), longest), np.float32)
        mask = np.zeros((len(windows), longest), np.int64)
        for i, w in enumerate(windows):
            x[i, : len(w)], mask[i, : len(w)] = w, 1
        inputs = torch.from_numpy(x).to(self._device, self._dtype)
        attention = torch.from_numpy(mask).to(self._device) if self._mask and len(windows) > 1 else None
        with torch.inference_mode():
            hidden = self._model(inputs, attention_mask=attention, output_hidden_states=True).hidden_states
            feats = torch.cat([hidden[layer] for layer in self.layers], -1).float().cpu().numpy()
        return [feats[i, : self._n_out(len(w))] for i, w in enumerate(windows)]


def _receptive_field(kernels, strides) -> int:
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field, jump = field + (k - 1) * jump, jump * s
    return field


def speech_backend(name: str, **options) -> SpeechBackend:
    """'mel', 'wav2vec2' or 'hubert' with the backend's keyword options (see the classes)."""
    if name == "mel":
        return MelBackend(**options)
    if name in HFSpeechBackend.DEFAULT_MODELS:
        return HFSpeechBackend(name, **options)
    raise ValueError(f"unknown speech backend {name!r}: choose mel, wav2vec2 or hubert")
