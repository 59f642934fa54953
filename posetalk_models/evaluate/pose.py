"""Evaluation of a PLD run as in the PoseTalk paper's comparison, on held-out clips.

- VAE reconstruction error in degrees (head angles, gaze angles) of the posterior mean.
- Diversity of the head angles (yaw, pitch, roll; degrees): the std over time within a window, and the std across
  samples drawn with different noise for the same conditions.
- Realness: the Fréchet distance between generated and real pose windows in the VAE encoder's feature space (the
  posterior mean, flattened to L*Z numbers per window), for audio-only, text-only and text+audio generation.
- Text control: prompts asking for opposite motions ("nods" / "keeps their head still", "turns their head to the
  left" / "to the right") must move the pose statistics in the direction the text says.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from posetalk_data.motion_text import PHRASES

from posetalk_models.data.windows import ANGLE_CHANNELS, DataConfig, denormalise, feature_versions, loader, normalise
from posetalk_models.generate.pose import check_same, load_pld, run_modes, run_text_encoder
from posetalk_models.nets.pld import Mode, PoseLatentDiffusion
from posetalk_models.nets.vae import PoseVAE, length_mask

HEAD = slice(0, 3)   # yaw, pitch, roll (degrees) in posetalk_models.data.windows.CHANNELS
YAW, PITCH = 0, 1


@torch.no_grad()
def recon_error_deg(model: PoseVAE, batch: dict, stats: dict) -> dict[str, float]:
    """Mean absolute reconstruction error in degrees (head angles, gaze angles) of the posterior mean."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = batch["pose"].to(device)
    x_hat, _ = model(normalise(x, stats), batch.get("length"))
    model.train(was_training)
    err = (denormalise(x_hat, stats) - x).abs()[..., :ANGLE_CHANNELS]
    mask = length_mask(batch.get("length"), x.shape[0], x.shape[1], device)
    return {"head_deg": err[..., :3][mask].mean().item(), "gaze_deg": err[..., 3:][mask].mean().item()}


# ------------------------------------------------------------------ Fréchet distance
def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix; round-off negative eigenvalues count as 0."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def gaussian_frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)) between N(mu1, cov1) and N(mu2, cov2).

    tr (cov1 cov2)^(1/2) is computed as the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    cov1^(1/2) cov2 cov1^(1/2) (the same eigenvalues as cov1 cov2). Unlike scipy.linalg.sqrtm of the
    non-symmetric product, this stays real and finite for singular covariances (fewer samples than dimensions), so
    no regularising epsilon or dropping of imaginary parts is needed. A result below 0 by round-off is 0."""
    root1 = _psd_sqrt(cov1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0, None)).sum()
    value = np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross
    return max(float(value), 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature samples a (n, d) and b (m, d); n, m >= 2.

    With fewer samples than dimensions the sample covariances are singular: the distance is still well defined
    (see gaussian_frechet_distance) but noisy and biased upwards, so compare figures computed with the same numbers
    of samples only."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 samples a side, got {len(a)} and {len(b)}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# ------------------------------------------------------------------ diversity
def diversity_over_time(angles: np.ndarray, lengths: np.ndarray | None = None) -> float:
    """Std over time of each window's angles, averaged over windows and angles. angles (n, T, A) in degrees;
    lengths (n,) counts the real frames of padded windows. Population std (ddof 0): a window is all there is."""
    angles = np.asarray(angles, np.float64)
    n, t, _ = angles.shape
    lengths = np.full(n, t) if lengths is None else np.asarray(lengths)
    mask = (np.arange(t)[None] < lengths[:, None])[..., None]                  # (n, T, 1)
    count = mask.sum(1)                                                        # (n, 1)
    mean = (angles * mask).sum(1) / count                                      # (n, A)
    var = (((angles - mean[:, None]) ** 2) * mask).sum(1) / count
    return float(np.sqrt(var).mean())


def diversity_across_samples(angles: np.ndarray) -> float:
    """Std across k samples for the same conditions, averaged over windows, frames and angles. angles (k, n, T, A)
    in degrees, k >= 2 samples of n windows each; population std (ddof 0), like diversity_over_time."""
    angles = np.asarray(angles, np.float64)
    if len(angles) < 2:
        raise ValueError("diversity across samples needs at least 2 samples per condition")
    return float(angles.std(0).mean())


# ------------------------------------------------------------------ VAE features, real and generated windows
@torch.no_grad()
def vae_features(vae: PoseVAE, poses: torch.Tensor, stats: dict, lengths: torch.Tensor | None = None) -> np.ndarray:
    """Pose windows (n, T, C) in data units (degrees, face scales) -> VAE posterior means flattened, (n, L*Z)."""
    device = next(vae.parameters()).device
    lengths = None if lengths is None else lengths.to(device)
    _, dist = vae.encode(normalise(poses.to(device), stats), lengths)
    return dist.mean.flatten(1).double().cpu().numpy()


def read_real_windows(manifest: str | Path, data: DataConfig, n: int, seed: int) -> dict:
    """The first n windows of one pass over a manifest as one batch (fewer when one pass has fewer)."""
    one_pass = data.model_copy(update={"resample": False, "seed": seed})
    batch = next(iter(loader(manifest, one_pass, batch_size=n, every_rank=True)), None)
    if batch is None:
        raise ValueError(f"{manifest}: no windows to evaluate on")
    return batch


@torch.no_grad()
def generate_windows(pld: PoseLatentDiffusion, vae: PoseVAE, stats: dict, text: torch.Tensor | None,
                     audio: torch.Tensor | None, *, mode: Mode, samples: int, steps: int, guidance: float,
                     seed: int) -> torch.Tensor:
    """`samples` windows for each of n conditions (text (n, Dt), audio (n, T, Da)) in one sampling batch ->
    (samples, n, T, C) in data units; a sample's rows differ from another's only by the diffusion noise."""
    n = len(text if audio is None else audio)
    device = pld.alphas_cumprod.device
    gen = torch.Generator(device=device).manual_seed(seed)
    text = None if text is None else text.to(device).repeat(samples, 1)
    audio = None if audio is None else audio.to(device).repeat(samples, 1, 1)
    z = pld.sample(samples * n, text, audio, mode=mode, guidance=guidance, steps=steps, generator=gen)
    poses = denormalise(vae.decode(z, pld.cfg.window), stats).float().cpu()
    return poses.reshape(samples, n, *poses.shape[1:])


# ------------------------------------------------------------------ text control
def control_prompt(action: str) -> str:
    """A prompt worded like posetalk_data.motion_text's captions (the training prompts) for one action."""
    return f"The person talks and {PHRASES[action][0]}."


def mean_pitch_speed(poses: np.ndarray) -> float:
    """Mean absolute pitch velocity (deg/frame) of windows (n, T, C)."""
    return float(np.abs(np.diff(np.asarray(poses, np.float64)[..., PITCH], axis=1)).mean())


def mean_yaw(poses: np.ndarray) -> float:
    """Mean yaw (deg) of windows (n, T, C); yaw > 0 is the person's LEFT (posetalk_data.motion_text)."""
    return float(np.asarray(poses, np.float64)[..., YAW].mean())


# name: (action asked for, its opposite, statistic, what it measures); score = stat(action) - stat(opposite) > 0
# when the model obeys the text
CONTROLS = {
    "nod": ("nod", "still", mean_pitch_speed, "mean |pitch velocity| (deg/frame)"),
    "turn": ("turn_left", "turn_right", mean_yaw, "mean yaw (deg, > 0 = the person's left)"),
}


def control_scores(poses: dict[str, np.ndarray]) -> dict:
    """Generated windows per action (action -> (n, T, C), data units) -> for each of CONTROLS: the prompts, the
    statistic for each, and the signed score (positive when the motion follows the text)."""
    out = {}
    for name, (action, opposite, statistic, meaning) in CONTROLS.items():
        values = [statistic(poses[action]), statistic(poses[opposite])]
        out[name] = {"prompts": [control_prompt(action), control_prompt(opposite)], "statistic": meaning,
                     "values": [round(v, 4) for v in values], "score": round(values[0] - values[1], 4)}
    return out


def text_control(pld: PoseLatentDiffusion, vae: PoseVAE, sidecar: dict, *, samples: int = 32, steps: int = 50,
                 guidance: float = 2.0, seed: int = 0, text_weights: str | None = None) -> dict:
    """Text-only generation of `samples` windows for each CONTROLS prompt (one sampling batch), prompts embedded
    with the run's recorded text encoder -> control_scores."""
    encoder = run_text_encoder(sidecar, text_weights)
    actions = [a for action, opposite, _, _ in CONTROLS.values() for a in (action, opposite)]
    emb = torch.from_numpy(encoder.encode([control_prompt(a) for a in actions]).astype(np.float32))
    poses = generate_windows(pld, vae, sidecar["stats"], emb, None, mode="text", samples=samples, steps=steps,
                             guidance=guidance, seed=seed)                     # (samples, actions, T, C)
    return control_scores({a: poses[:, i].numpy() for i, a in enumerate(actions)})


# ------------------------------------------------------------------ a run on a held-out manifest
def check_heldout_features(manifest: str | Path, sidecar: dict, data: DataConfig) -> None:
    """The held-out manifest's speech/text features must come from the extractors the run was trained with."""
    heldout = feature_versions(manifest, data.speech, data.text)
    for role, record in sidecar["features"].items():
        check_same(role, record["versions"], heldout[role]["versions"])


def evaluate_run(run: str | Path, manifest: str | Path, *, windows: int = 64, steps: int = 50, guidance: float = 2.0,
                 seed: int = 0, samples: int = 4, device: str = "cpu", text_weights: str | None = None) -> dict:
    """Evaluate a PLD run on (up to) `windows` real windows of a held-out manifest, cut with the run's DataConfig.

    Returns (JSON-able; angles in degrees):
      {"run", "checkpoint_step", "manifest", "windows" (real windows used), "samples" (per condition), "steps",
       "guidance", "seed",
       "vae": {"recon_head_deg", "recon_gaze_deg"},
       "real": {"diversity_time_deg"} (the reference for the generated figures),
       "modes": {mode: {"fid_vae", "diversity_time_deg", "diversity_samples_deg"}} for audio / text / both (those
                the run's features allow), generated for the real windows' own speech and prompt embeddings,
       "text_control": control_scores figures from `windows` text-only samples per prompt, or None for a run
                       without text}.
    Every mode starts from the same seeded noise, so the modes differ by their conditions only."""
    pld, vae, sidecar = load_pld(run, device=device)
    stats = sidecar["stats"]
    data = DataConfig(**sidecar["config"]["data"])
    check_heldout_features(manifest, sidecar, data)
    batch = read_real_windows(manifest, data, windows, seed)
    real = vae_features(vae, batch["pose"], stats, batch["length"])
    recon = recon_error_deg(vae, batch, stats)
    figures = {"run": str(run), "checkpoint_step": sidecar["step"], "manifest": str(manifest),
               "windows": len(batch["pose"]), "samples": samples, "steps": steps, "guidance": guidance, "seed": seed,
               "vae": {"recon_head_deg": round(recon["head_deg"], 4), "recon_gaze_deg": round(recon["gaze_deg"], 4)},
               "real": {"diversity_time_deg": round(diversity_over_time(batch["pose"][..., HEAD].numpy(),
                                                                        batch["length"].numpy()), 4)},
               "modes": {}, "text_control": None}
    for mode in run_modes(sidecar):
        poses = generate_windows(pld, vae, stats, batch.get("text"), batch.get("speech"), mode=mode,
                                 samples=samples, steps=steps, guidance=guidance, seed=seed)
        flat = poses.flatten(0, 1)
        figures["modes"][mode] = {
            "fid_vae": round(frechet_distance(vae_features(vae, flat, stats), real), 4),
            "diversity_time_deg": round(diversity_over_time(flat[..., HEAD].numpy()), 4),
            "diversity_samples_deg": round(diversity_across_samples(poses[..., HEAD].numpy()), 4)}
    if "text" in sidecar["features"]:
        figures["text_control"] = text_control(pld, vae, sidecar, samples=windows, steps=steps, guidance=guidance,
                                               seed=seed, text_weights=text_weights)
    return figures
