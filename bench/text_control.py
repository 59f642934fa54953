"""Do the pose models learn text control when the training data has it? A measurement on synthetic pose tracks.

What is measured. posetalk_models.evaluate.pose.text_control: text-only generation of `--samples` windows for each of
four prompts worded like our captions ("The person talks and nods." / "... keeps their head still.", "... turns
their head to the left." / "... to the right."), scored as
    nod  : mean |pitch velocity| (deg/frame) for "nods" minus that for "keeps their head still"
    turn : mean yaw (deg, > 0 = the person's left) for "turns ... left" minus that for "turns ... right"
A score > 0 means the motion follows the text. The same statistics are printed for
    ceiling : the training windows themselves (every window // 2 frames), grouped by their captions: a clip is in
              the "nod" group when its captions say it nods and never that it keeps still, and so on (a clip that
              turns and then holds still is in a turn group and the "still" group);
    floor   : an untrained PLD of the same config over the same trained VAE, with the trained one's latent
              normalisation. Its output layer starts at zero (posetalk_models.nets.pld), so the text cannot move it:
              its scores are what sampling noise alone gives with this many samples (chance).
each for `--seeds` sampling seeds, at guidance 0 (plain conditional sampling) and the `--guidance` values given.
"ratio" is score / ceiling; guidance > 0 exaggerates what the text asks for, so it can pass 1. Text control
counts as shown for a control when its score is > 0 for every seed and beyond the largest |floor score|. The four
control prompts never occur verbatim among the training prompts (the captions add durations, other subjects,
"While talking, ..."; the script checks and prints this), so the model must generalise over wording a little.

How the data is made. `--clips` clips of 4-6 s at 25 fps, each with one action for the whole clip or two in
sequence:
    nod        : pitch oscillation at 1.5-2.5 Hz, 6-12 deg peak to peak, eased in and out
    turn left/ : a sustained yaw change of +/-15-30 deg, eased over 0.4-0.8 s, then held (yaw > 0 = the person's
    right        left, as in posetalk_data.motion_text)
    still      : nothing but the jitter below (< 1 deg)
on top of a per-clip base pose (+/-3 deg), tracking jitter (0.15 deg white noise) and a slow drift (0.3 deg).
Gaze is eye-in-head and follows the head (30 % of its excursion) with 0.5 deg noise; the face centre and scale
are constant-ish (source pixels, a per-clip framing, a small shift with the head angles, 0.3 px jitter). The
audio is white noise under a random 3-5 Hz syllable-like envelope, turned into 80-d log-mel by the real mel
backend (posetalk_data.speech): the speech features carry no information about the motion, on purpose: this
tests text, not audio. Captions are written by the pipeline's own clip_text -> motion_text.describe (seeded by
the key, 3 phrasings a clip), so the training prompts are worded exactly as in our shards, and embedded with the
real MiniLM encoder (the distinct prompts, one batch). Shards, samples.parquet and a manifest (format v1) are
written like a build's. verify() is run and its findings summarised: the clips have no video.mp4, audio.flac or
landmarks.npy, so it reports those members missing, and nothing else.

Training: the trainers' default configs (posetalk_models.train.config: VAE d_model 64, 2+2 layers, 4x16 latents; PLD
d_model 128, 5 layers, p_drop_text = p_drop_audio = 0.1, batch 16, lr 3e-4) at window 16, with `--steps-vae` and
`--steps-pld` steps on the CPU (`--threads`, default 1: for models this small one thread is the fastest on a
shared 2-core machine). `--set-vae` / `--set-pld` override any config key. About 10 minutes on 2 busy cores.

Limits. The motion is synthetic and clean: one action at a time, exact sign conventions, no face-tracking
failures, no speech-motion coupling, captions always true to the track. A positive result says that the models,
their conditioning path and the trainers can learn text control from data that has it, at this small size and
training length; it is no claim about real video (HDTF, CelebV-Text), where captions are noisier and the motion
richer. A negative result at these sizes would say little about the full-size models either.

Run:  HF_HUB_OFFLINE=1 .venv/bin/python bench/text_control.py [--out /tmp/posetalk-text-control] [--clips 300]
      [--steps-vae N] [--steps-pld N] [--set-vae key=value ...] [--set-pld key=value ...]
The output folder is rebuilt from scratch on each run (it must be new, empty, or one this script made); the
figures are also written to OUT/text_control.json. The exit code is 0 whatever the scores: this is a
measurement, not a test.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posetalk_data.members import npy_bytes
from posetalk_data.schema import AUDIO_RATE, SCHEMA_VERSION, VIDEO_FPS, sample_key

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # everything here is local; never reach for the hub

FPS = VIDEO_FPS
MARKER = ".posetalk-text-control"    # marks an output folder this script may wipe and rebuild
SOURCE = "synthetic"
SAMPLES_PER_SHARD = 64


# ------------------------------------------------------------------ synthetic pose tracks
@dataclass(frozen=True)
class Segment:
    kind: str        # nod, still, turn_left, turn_right
    start: int       # frames
    end: int


def plan_clip(rng: np.random.Generator, frames: int) -> list[Segment]:
    """One action for the whole clip, or two in sequence split near the middle. A turn is never followed by
    another turn (that would read as turning back, a different caption)."""
    if rng.random() < 0.5:
        return [Segment(str(rng.choice(["nod", "still", "turn_left", "turn_right"])), 0, frames)]
    split = int(frames * rng.uniform(0.4, 0.6))
    first = str(rng.choice(["nod", "still", "turn_left", "turn_right"]))
    second = str(rng.choice([k for k in ("nod", "still", "turn_left", "turn_right")
                             if k != first and not (k.startswith("turn") and first.startswith("turn"))]))
    return [Segment(first, 0, split), Segment(second, split, frames)]


def ease(x: np.ndarray) -> np.ndarray:
    """0 -> 1 with zero velocity at both ends (raised cosine), for x in [0, 1]."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def drift(rng: np.random.Generator, n: int, std: float, smooth_s: float = 1.0) -> np.ndarray:
    """Slow wander of roughly `std` (a random walk low-passed over smooth_s), zero-mean."""
    k = max(int(smooth_s * FPS), 1)
    walk = np.convolve(rng.normal(size=n + k), np.ones(k) / k, mode="valid")[:n]
    walk -= walk.mean()
    return walk * std / max(walk.std(), 1e-9)


def nod_motion(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pitch oscillation over n frames, eased in and out over 0.15 s so the segment edges are smooth."""
    t = np.arange(n) / FPS
    freq, peak_to_peak = rng.uniform(1.5, 2.5), rng.uniform(6.0, 12.0)
    envelope = np.minimum(ease(t / 0.15), ease((t[-1] - t) / 0.15))
    return 0.5 * peak_to_peak * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) * envelope


def turn_motion(rng: np.random.Generator, n: int, sign: int) -> np.ndarray:
    """A yaw change of sign * 15-30 deg eased over 0.4-0.8 s, starting 0.2-0.8 s into the segment, then held.
    Returns the offset from the segment's starting yaw."""
    t = np.arange(n) / FPS
    start = rng.uniform(0.2, min(0.8, max(t[-1] - 1.0, 0.2)))
    return sign * rng.uniform(15.0, 30.0) * ease((t - start) / rng.uniform(0.4, 0.8))


def head_angles(rng: np.random.Generator, segments: list[Segment], frames: int) -> np.ndarray:
    """(frames, 3) yaw, pitch, roll in degrees: base pose + actions + drift + tracking jitter."""
    angles = np.tile(rng.uniform([-3, -3, -2], [3, 3, 2]), (frames, 1))
    held = 0.0                                       # a turn's yaw stays for the segments after it
    for seg in segments:
        n = seg.end - seg.start
        angles[seg.start:seg.end, 0] += held
        if seg.kind == "nod":
            angles[seg.start:seg.end, 1] += nod_motion(rng, n)
        elif seg.kind.startswith("turn"):
            offset = turn_motion(rng, n, +1 if seg.kind == "turn_left" else -1)
            angles[seg.start:seg.end, 0] += offset
            held += offset[-1]
    for axis in range(3):
        angles[:, axis] += drift(rng, frames, 0.3) + rng.normal(0, 0.15, frames)
    return angles


def gaze_of(rng: np.random.Generator, angles: np.ndarray) -> np.ndarray:
    """(frames, 4) eye-in-head yaw/pitch of the image-left then image-right eye (deg): 30 % of the head's
    excursion from its mean, a little vergence, 0.5 deg noise."""
    follow = 0.3 * (angles[:, :2] - angles[:, :2].mean(0))
    vergence = np.array([1.5, 0.0])
    eyes = [follow + vergence * side + rng.normal(0, 0.5, follow.shape) for side in (+1, -1)]
    return np.concatenate(eyes, axis=1)


def face_box(rng: np.random.Generator, angles: np.ndarray) -> np.ndarray:
    """(frames, 3) face centre x, y and scale in source pixels: a per-clip framing that shifts slightly with the
    head angles, 0.3 px jitter."""
    frames = len(angles)
    scale = rng.uniform(80, 160)
    x = rng.uniform(200, 440) + 0.01 * scale * angles[:, 0] + rng.normal(0, 0.3, frames)
    y = rng.uniform(150, 330) - 0.01 * scale * angles[:, 1] + rng.normal(0, 0.3, frames)
    s = scale * (1 + 0.005 * drift(rng, frames, 1.0)) + rng.normal(0, 0.3, frames)
    return np.stack([x, y, s], axis=1)


def noise_audio(rng: np.random.Generator, frames: int) -> np.ndarray:
    """16 kHz white noise under a 3-5 Hz syllable-like envelope: speech-shaped energy, no link to the motion."""
    t = np.arange(frames * AUDIO_RATE // FPS) / AUDIO_RATE
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 2 * np.pi))
    return (0.1 * envelope * rng.normal(size=len(t))).astype(np.float32)


def synth_clip(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Segment]]:
    """(pose [T,6] float32, gaze [T,4] float32, audio, the planned segments) of one 4-6 s clip."""
    frames = int(rng.uniform(4.0, 6.0) * FPS)
    segments = plan_clip(rng, frames)
    angles = head_angles(rng, segments, frames)
    pose = np.concatenate([angles, face_box(rng, angles)], axis=1).astype(np.float32)
    return pose, gaze_of(rng, angles).astype(np.float32), noise_audio(rng, frames), segments


# ------------------------------------------------------------------ shards and manifest, as a build writes them
def clip_members(key: str, pose: np.ndarray, gaze: np.ndarray, audio: np.ndarray, segments: list[Segment],
                 speech) -> dict:
    """The members of one sample except the text embedding (written once all prompts are known)."""
    from posetalk_data.stages.features import clip_text

    frames = len(pose)
    text = clip_text(key, pose, {}, 3)     # the pipeline's own captioning of a clip without dataset captions
    meta = {"schema_version": SCHEMA_VERSION, "key": key, "source": SOURCE, "video_id": key, "fps": FPS,
            "frames": frames, "start": 0.0, "end": frames / FPS, "flags": [], "extra": {},
            "synthetic_plan": [[s.kind, s.start, s.end] for s in segments],
            "quality": {"silent": False, **{f"{a}_range": float(np.ptp(pose[:, i]))
                                            for i, a in enumerate(("yaw", "pitch", "roll"))}}}
    return {"pose.npy": npy_bytes(pose), "gaze.npy": npy_bytes(gaze),
            speech.member_name: npy_bytes(speech.features(audio, frames)),
            "text.json": json.dumps(text, indent=1, sort_keys=True).encode(),
            "meta.json": json.dumps(meta, indent=1, sort_keys=True).encode()}


def embed_prompts(samples: dict[str, dict], encoder) -> None:
    """Adds the text member to every sample: all distinct prompts embedded in one batch, rows per sample."""
    prompts = {key: json.loads(m["text.json"])["prompts"] for key, m in samples.items()}
    unique = sorted({p for ps in prompts.values() for p in ps})
    rows = dict(zip(unique, encoder.encode(unique)))
    for key, members in samples.items():
        members[encoder.member_name] = npy_bytes(np.stack([rows[p] for p in prompts[key]]))


def sample_row(key: str, shard: str, members: dict) -> dict:
    """A samples.parquet row (posetalk_data.shards.SAMPLES_SCHEMA) from a sample's meta.json."""
    from posetalk_data.shards import QUALITY_COLUMNS

    meta = json.loads(members["meta.json"])
    return {"key": key, "shard": shard, "source": SOURCE, "video_id": meta["video_id"], "source_path": "",
            "start": meta["start"], "end": meta["end"], "frames": meta["frames"],
            "duration": meta["frames"] / FPS, "flags": [], "silent": False, "identity": None, "split": None,
            **{c: meta["quality"].get(c) for c in QUALITY_COLUMNS}}


def write_dataset(out: Path, samples: dict[str, dict], versions: dict, layers: dict) -> Path:
    """Shards of SAMPLES_PER_SHARD samples in key order, samples.parquet and manifest.json (written last)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from posetalk_data.pipeline import MEMBERS
    from posetalk_data.shards import SAMPLES_SCHEMA, write_tar

    (out / "shards").mkdir(parents=True, exist_ok=True)
    keys, shards, rows = sorted(samples), [], []
    for i in range(0, len(keys), SAMPLES_PER_SHARD):
        chunk, rel = keys[i:i + SAMPLES_PER_SHARD], f"shards/posetalk-{i // SAMPLES_PER_SHARD:06d}.tar"
        digest = write_tar(out / rel, ((k, samples[k]) for k in chunk))
        shards.append({"path": rel, "sha256": digest, "samples": len(chunk), "bytes": (out / rel).stat().st_size})
        rows += [sample_row(k, rel, samples[k]) for k in chunk]
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), out / "samples.parquet")
    present = {name for m in samples.values() for name in m}
    manifest = {"format": "posetalk-shards", "schema_version": SCHEMA_VERSION, "source": SOURCE, "pipeline": None,
                "versions": versions, "sources": [],
                "members": {**{n: m.description for n, m in MEMBERS.items() if n in present}, **layers},
                "counts": {"samples": len(rows), "shards": len(shards), "failures": 0, "videos": len(rows),
                           "hours": round(sum(r["duration"] for r in rows) / 3600, 4)},
                "shards": shards, "tables": {"samples": "samples.parquet"}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return out / "manifest.json"


def build_dataset(out: Path, clips: int, seed: int) -> Path:
    """Synthesise the clips, caption and embed them with the real extractors, write shards + manifest."""
    from posetalk_data.stages.features import speech_layer, text_layer
    from posetalk_data.speech import speech_backend
    from posetalk_data.text_encoders import text_encoder

    speech, encoder = speech_backend("mel"), text_encoder("minilm")
    rng = np.random.default_rng(seed)
    samples = {}
    for i in range(clips):
        pose, gaze, audio, segments = synth_clip(rng)
        key = sample_key(SOURCE, f"clip{i:05d}", 0.0, len(pose) / FPS)
        samples[key] = clip_members(key, pose, gaze, audio, segments, speech)
    embed_prompts(samples, encoder)
    versions = {m: json.dumps(x.versions(), sort_keys=True, default=str)
                for m, x in ((speech.member_name, speech), (encoder.member_name, encoder))}
    versions["posetalk"] = "synthetic pose tracks (bench/text_control.py)"
    layers = {speech.member_name: speech_layer(speech.member_name, f"{speech.name}; from synthetic noise audio"
                                               ).description,
              encoder.member_name: text_layer(encoder.member_name, encoder.name).description}
    return write_dataset(out, samples, versions, layers)


def verify_summary(manifest: Path) -> str:
    """verify()'s findings counted by kind and detail: only the media members a synthetic clip lacks expected."""
    from posetalk_data.verify import verify

    problems = Counter(f"{p.what}: {p.detail}" for p in verify(manifest))
    return "; ".join(f"{what} (x{n})" for what, n in problems.items()) or "no problems"


def caption_summary(manifest: Path) -> tuple[Counter, list[str], list[str]]:
    """(clips per detected action kind, a few example prompts, the control prompts that occur verbatim among the
    training prompts: the others test wording the model never saw exactly)."""
    from posetalk_data.reading import read_samples
    from posetalk_models.evaluate.pose import CONTROLS, control_prompt

    kinds, examples, seen = Counter(), [], set()
    for _, sample in read_samples(manifest):
        text = json.loads(sample["text.json"])
        kinds.update({a["kind"] for a in text["actions"]} or {"(none)"})
        seen.update(text["prompts"])
        if len(examples) < 6:
            examples.append(text["prompts"][0])
    controls = [control_prompt(a) for action, opposite, _, _ in CONTROLS.values() for a in (action, opposite)]
    return kinds, examples, [p for p in controls if p in seen]


# ------------------------------------------------------------------ training
def train_runs(manifest: Path, out: Path, args) -> tuple[Path, Path, dict]:
    """Trains the VAE, then the PLD on its latents; returns (vae run, pld run, seconds per stage)."""
    from posetalk_models.train.config import load_train_config
    from posetalk_models.train.pose_pld import train_pld
    from posetalk_models.train.pose_vae import train_vae

    quiet = ["loop.progress=false", "loop.tensorboard=false", "loop.device=cpu", f"data.window={args.window}",
             "loop.log_every=100", "loop.keep_checkpoints=1", f"loop.seed={args.seed}"]
    vae_cfg = load_train_config("vae", None, quiet + [f"loop.max_steps={args.steps_vae}",
                                                      f"loop.ckpt_every={args.steps_vae}"] + args.set_vae)
    pld_cfg = load_train_config("pld", None, quiet + [f"loop.max_steps={args.steps_pld}",
                                                      f"loop.ckpt_every={args.steps_pld}"] + args.set_pld)
    seconds = {}
    started = time.perf_counter()
    train_vae(manifest, out / "vae", vae_cfg)
    seconds["vae"] = time.perf_counter() - started
    started = time.perf_counter()
    train_pld(manifest, out / "pld", pld_cfg, vae_run=out / "vae")
    seconds["pld"] = time.perf_counter() - started
    return out / "vae", out / "pld", seconds


def last_metrics(run: Path) -> dict:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


# ------------------------------------------------------------------ evaluation
def caption_groups(actions: set[str]) -> set[str]:
    """The control prompts a clip's captions stand for: an action said and its opposite never said."""
    from posetalk_models.evaluate.pose import CONTROLS

    groups = set()
    for action, opposite, _, _ in CONTROLS.values():
        for a, b in ((action, opposite), (opposite, action)):
            if a in actions and b not in actions:
                groups.add(a)
    return groups


def ceiling_scores(manifest: Path, window: int) -> tuple[dict, Counter]:
    """control_scores over the training data's own windows (every window // 2 frames), grouped by caption."""
    from posetalk_data.reading import read_samples
    from posetalk_models.evaluate.pose import control_scores

    windows: dict[str, list[np.ndarray]] = {}
    clips = Counter()
    for _, sample in read_samples(manifest):
        pose = np.load(io.BytesIO(sample["pose.npy"]), allow_pickle=False)
        actions = {a["kind"] for a in json.loads(sample["text.json"])["actions"]}
        for group in caption_groups(actions):
            clips[group] += 1
            windows.setdefault(group, []).extend(
                pose[s:s + window] for s in range(0, len(pose) - window + 1, max(window // 2, 1)))
    return control_scores({g: np.stack(w) for g, w in windows.items()}), clips


def untrained_like(pld):
    """A PLD of the same config, freshly initialised, with the trained one's latent normalisation (so its samples
    decode at the same scale): the chance level of text_control."""
    import torch

    from posetalk_models.nets.pld import PoseLatentDiffusion

    torch.manual_seed(12345)
    fresh = PoseLatentDiffusion(pld.cfg)
    fresh.latent_mean.copy_(pld.latent_mean)
    fresh.latent_std.copy_(pld.latent_std)
    return fresh.eval()


def control_table(pld_run: Path, args) -> list[dict]:
    """Rows {model, guidance, seed, nod, turn, values} of text_control for the trained and the untrained PLD."""
    from posetalk_models.evaluate.pose import text_control
    from posetalk_models.generate.pose import load_pld

    pld, vae, sidecar = load_pld(pld_run)
    floor = untrained_like(pld)
    rows = []
    for name, model in (("trained", pld), ("untrained", floor)):
        for guidance in [0.0, *args.guidance]:
            if name == "untrained" and guidance:
                continue     # the untrained model ignores text at any guidance; one setting is enough
            for seed in range(args.seeds):
                got = text_control(model, vae, sidecar, samples=args.samples, steps=args.sample_steps,
                                   guidance=guidance, seed=seed)
                rows.append({"model": name, "guidance": guidance, "seed": seed,
                             **{c: got[c]["score"] for c in got}, "values": {c: got[c]["values"] for c in got}})
    return rows


def scores_of(rows: list[dict], control: str, model: str, guidance: float | None = None) -> list[float]:
    return [r[control] for r in rows if r["model"] == model and guidance in (None, r["guidance"])]


def shown(rows: list[dict], control: str, guidance: float) -> bool:
    """Every seed's score is > 0 and beyond the largest |score| the untrained PLD (chance) reached."""
    chance = max(abs(s) for s in scores_of(rows, control, "untrained"))
    return min(scores_of(rows, control, "trained", guidance)) > chance


def table_line(label: str, scores: list[float], ceiling: float, verdict: str = "") -> str:
    mean = float(np.mean(scores))
    per_seed = " ".join(f"{s:7.3f}" for s in scores) if len(scores) > 1 else ""
    return f"  {label:26s} {per_seed:>24s} {mean:8.3f} {mean / ceiling:7.2f}  {verdict}"


def print_report(rows: list[dict], ceiling: dict, args) -> None:
    from posetalk_models.evaluate.pose import CONTROLS

    print(f"\ntext control: {args.samples} samples per prompt, {args.sample_steps} DDIM steps, "
          f"sampling seeds 0..{args.seeds - 1}; ratio = mean / ceiling")
    for control, (action, opposite, _, meaning) in CONTROLS.items():
        top = ceiling[control]["score"]
        print(f"\n{control}: {meaning}; score = stat({action}) - stat({opposite})")
        print(f"  {'':26s} {'score per seed':>24s} {'mean':>8s} {'ratio':>7s}  shown")
        print(table_line("ceiling (training data)", [top], top))
        print(table_line("floor (untrained PLD)", scores_of(rows, control, "untrained"), top))
        for guidance in [0.0, *args.guidance]:
            print(table_line(f"trained, guidance {guidance:g}", scores_of(rows, control, "trained", guidance), top,
                             "yes" if shown(rows, control, guidance) else "no"))
        values = {r["guidance"]: r["values"][control] for r in rows if r["model"] == "trained" and r["seed"] == 0}
        print(f"  stat({action}), stat({opposite}): ceiling {ceiling[control]['values']}; "
              + "; ".join(f"guidance {g:g} seed 0 {v}" for g, v in values.items()))


# ------------------------------------------------------------------ main
def fresh_out(out: Path) -> None:
    """Empties an output folder this script made before (the marker says so); refuses any other non-empty one."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise SystemExit(f"{out} is not empty and was not made by this script; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by bench/text_control.py; wiped and rebuilt on each run\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/posetalk-text-control"))
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--window", type=int, default=16, help="frames per window (VAE and PLD)")
    parser.add_argument("--steps-vae", type=int, default=800)
    parser.add_argument("--steps-pld", type=int, default=2000)
    parser.add_argument("--set-vae", nargs="*", default=[], metavar="KEY=VALUE", help="VAE config overrides")
    parser.add_argument("--set-pld", nargs="*", default=[], metavar="KEY=VALUE", help="PLD config overrides")
    parser.add_argument("--samples", type=int, default=64, help="generated windows per prompt")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--guidance", type=float, nargs="*", default=[2.0], help="besides guidance 0")
    parser.add_argument("--seeds", type=int, default=2, help="sampling seeds per setting")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 is fastest for these tiny models on a shared 2-core machine")
    return parser.parse_args(argv)


def run_summary(run: Path, keys: dict[str, tuple[str, ...]]) -> str:
    """The chosen config values of a run's last checkpoint sidecar, e.g. model.d_model=128."""
    config = json.loads(sorted(run.glob("step-*.json"))[-1].read_text())["config"]
    return " ".join(f"{section}.{k}={config[section][k]}" for section, names in keys.items() for k in names)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    fresh_out(args.out)
    t0 = time.perf_counter()
    manifest = build_dataset(args.out / "data", args.clips, args.seed)
    kinds, examples, verbatim = caption_summary(manifest)
    print(f"data: {args.clips} clips in {time.perf_counter() - t0:.0f} s -> {manifest}")
    print(f"  detected actions (clips): {dict(sorted(kinds.items()))}")
    print("  e.g. " + "\n       ".join(examples))
    print(f"  control prompts found verbatim among the training prompts: {verbatim or 'none'}")
    print(f"  verify: {verify_summary(manifest)}")
    vae_run, pld_run, seconds = train_runs(manifest, args.out, args)
    shown = {"model": ("d_model", "layers", "p_drop_text", "p_drop_audio"), "data": ("window", "speech", "text"),
             "loop": ("batch_size", "lr")}
    print(f"vae: {args.steps_vae} steps in {seconds['vae']:.0f} s; "
          f"{run_summary(vae_run, {'model': ('d_model', 'latent_tokens', 'latent_dim'), 'loop': ('batch_size',)})}; "
          f"last log {last_metrics(vae_run)}")
    print(f"pld: {args.steps_pld} steps in {seconds['pld']:.0f} s; {run_summary(pld_run, shown)}; "
          f"last log {last_metrics(pld_run)}")
    started = time.perf_counter()
    window = json.loads(sorted(pld_run.glob("step-*.json"))[-1].read_text())["config"]["data"]["window"]
    ceiling, groups = ceiling_scores(manifest, window)
    rows = control_table(pld_run, args)
    print(f"evaluation in {time.perf_counter() - started:.0f} s; ceiling groups (clips): {dict(groups)}")
    print_report(rows, ceiling, args)
    (args.out / "text_control.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                            "ceiling": ceiling, "rows": rows}, indent=1))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; figures in {args.out / 'text_control.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
