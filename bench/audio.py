"""Speech-feature speed on this machine: real-time factor (compute seconds per second of audio; below 1 is faster
than real time) of each backend at the base model size, unbatched (one clip at a time) and batched.

mel       : 80-bin log-mel (numpy, no weights)
wav2vec2  : Wav2Vec2Model with transformers' default config (= wav2vec2-base), random init (speed only)
hubert    : HubertModel with the default config (= hubert-base), random init
Audio: the speech files in ../shared/samples/audio (converted to 16 kHz mono). Runs on CUDA with fp16 where
present, else on the CPU with torch's default threads. Batched: features_batch over all clips with the default
padding limit (max_pad 0.15); `--one-batch` adds everything in one padded batch (max_pad 1.0). Ratios are batched
time / unbatched time (below 1: batching helps). About a minute on 2 idle CPU cores; torch follows
OMP_NUM_THREADS (OMP_NUM_THREADS=1 measures one core, as one Ray worker per core would run).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO.parent / "shared" / "samples" / "audio"
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_clips() -> list:
    from posetalk_data.media import extract_audio, read_wav
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(AUDIO.glob("*.wav")):
            wav = Path(tmp) / path.name
            extract_audio(path, wav, rate=16_000)
            clips.append(read_wav(wav))
    return clips


def backends(**options) -> dict:
    import torch
    import transformers
    from posetalk_data.speech import HFSpeechBackend, MelBackend
    torch.manual_seed(0)
    return {
        "mel": MelBackend(**options),
        "wav2vec2-base": HFSpeechBackend.from_model(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()),
                                                    "wav2vec2", model_id="random-init base", **options),
        "hubert-base": HFSpeechBackend.from_model(transformers.HubertModel(transformers.HubertConfig()),
                                                  "hubert", model_id="random-init base", **options),
    }


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    if not AUDIO.is_dir():
        sys.exit(f"no sample audio at {AUDIO}")
    import torch
    clips = load_clips()
    items = [(a, len(a) * 25 // 16_000) for a in clips]
    seconds = sum(n for _, n in items) / 25
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{len(items)} clips, {seconds:.1f} s of speech, {device}")
    one = "--one-batch" in sys.argv
    print(f"{'backend':<14}{'RTF unbatched':>15}{'RTF batched':>13}{'batched/unbatched':>19}"
          + (f"{'RTF 1 batch':>13}{'1 batch/unbatched':>19}" if one else ""))
    for name, backend in backends().items():
        backend.features(clips[0][:16_000], 25)                        # warm-up: first-call costs
        unbatched = timed(lambda: [backend.features(a, n) for a, n in items])
        batched = timed(lambda: backend.features_batch(items))
        line = f"{name:<14}{unbatched / seconds:>15.4f}{batched / seconds:>13.4f}{batched / unbatched:>19.2f}"
        if one:
            backend.max_pad, backend.batch_size = 1.0, len(items)
            single = timed(lambda: backend.features_batch(items))
            line += f"{single / seconds:>13.4f}{single / unbatched:>19.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
