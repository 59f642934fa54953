"""Trainer for the pose VAE: AdamW, safetensors checkpoints with a JSON sidecar, resume, metrics.jsonl.

Run: python -m posetalk_models.train_vae MANIFEST OUT_DIR [--max-steps N] (the lead wires `posetalk-train`)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from posetalk_models import __version__
from posetalk_models.data import ANGLE_CHANNELS, DataConfig, denormalise, loader, normalise, pose_stats
from posetalk_models.vae import PoseVAE, PoseVAEConfig


@dataclass(frozen=True)
class TrainVAEConfig:
    # tiny defaults: a CPU run of max_steps finishes in well under a minute
    model: PoseVAEConfig = PoseVAEConfig(d_model=64, enc_layers=2, dec_layers=2, latent_dim=16, dropout=0.0)
    data: DataConfig = DataConfig(window=16, speech=None, text=None)  # the VAE needs motion only
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_steps: int = 200
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ckpt_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"         # auto: cuda if available, else cpu
    progress: bool = True


def config_from_dict(d: dict) -> TrainVAEConfig:
    d = dict(d)
    return TrainVAEConfig(model=PoseVAEConfig(**d.pop("model")), data=DataConfig(**d.pop("data")), **d)


def _ckpts(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("step-*.safetensors"))


def save_checkpoint(out_dir: Path, model: PoseVAE, opt: torch.optim.Optimizer, step: int,
                    cfg: TrainVAEConfig, stats: dict) -> Path:
    path = out_dir / f"step-{step:08d}.safetensors"
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path.with_suffix(".tmp")), metadata={"posetalk": __version__, "step": str(step)})
    torch.save(opt.state_dict(), path.with_suffix(".opt.pt"))
    sidecar = {"config": asdict(cfg), "step": step, "stats": stats, "posetalk_version": __version__}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    path.with_suffix(".tmp").replace(path)  # the weights appear last: a listed checkpoint is complete
    for old in _ckpts(out_dir)[:-cfg.keep_checkpoints]:
        for p in (old, old.with_suffix(".json"), old.with_suffix(".opt.pt")):
            p.unlink(missing_ok=True)
    return path


def load_vae(run_dir: str | Path, *, device: str = "cpu") -> tuple[PoseVAE, dict]:
    """(eval-mode model, normalisation stats) from a run folder's last checkpoint (or a .safetensors path)."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.suffix == ".safetensors" else (_ckpts(run_dir) or [None])[-1]
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no step-*.safetensors checkpoint")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    model = PoseVAE(PoseVAEConfig(**sidecar["config"]["model"]))
    model.load_state_dict(load_file(str(path), device=device))
    return model.to(device).eval(), sidecar["stats"]


def recon_error_deg(model: PoseVAE, batch: dict, stats: dict) -> dict[str, float]:
    """Mean absolute reconstruction error in degrees (head angles, gaze angles) of the posterior mean."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = batch["pose"].to(device)
    with torch.no_grad():
        x_hat, _ = model(normalise(x, stats))
    model.train(was_training)
    err = (denormalise(x_hat, stats) - x).abs()[..., :ANGLE_CHANNELS]
    mask = torch.ones_like(err[..., 0], dtype=torch.bool) if "length" not in batch else \
        torch.arange(x.shape[1], device=device)[None] < batch["length"].to(device)[:, None]
    return {"head_deg": err[..., :3][mask].mean().item(), "gaze_deg": err[..., 3:][mask].mean().item()}


def _device(cfg: TrainVAEConfig) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)


def _autocast(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext()  # CPU: float32 (bf16 on CPU is slower and less accurate here)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def train_vae(manifest: str | Path, out_dir: str | Path, cfg: TrainVAEConfig = TrainVAEConfig()) -> Path:
    """Train (or resume) in out_dir until cfg.max_steps; returns the last checkpoint's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = _device(cfg)
    torch.manual_seed(cfg.seed)
    model = PoseVAE(cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, stats, last = 0, None, (_ckpts(out_dir) or [None])[-1]
    if last is not None:  # resume: weights, optimiser and stats from the checkpoint, the rest from cfg
        sidecar = json.loads(last.with_suffix(".json").read_text())
        model.load_state_dict(load_file(str(last), device=str(device)))
        opt.load_state_dict(torch.load(last.with_suffix(".opt.pt"), map_location=device, weights_only=True))
        step, stats = sidecar["step"], sidecar["stats"]
    if step >= cfg.max_steps:
        return last
    stats = stats or pose_stats(manifest, window=cfg.data.window, translation=cfg.data.translation)
    if len(stats["mean"]) != cfg.model.channels:
        raise ValueError(f"model has {cfg.model.channels} channels, the data {len(stats['mean'])}")
    # a resumed run draws fresh windows instead of replaying the first ones
    data = dataclasses.replace(cfg.data, seed=cfg.data.seed + step)
    batches = iter(loader(manifest, data, batch_size=cfg.batch_size, num_workers=cfg.num_workers))
    start = step  # the warmup continues where the run left it
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (start + s + 1) / max(cfg.warmup_steps, 1)))
    progress = _progress(cfg)
    model.train()
    with (out_dir / "metrics.jsonl").open("a") as metrics, progress or contextlib.nullcontext():
        task = progress.add_task("pose VAE", total=cfg.max_steps, completed=step) if progress else None
        t0 = time.perf_counter()
        while step < cfg.max_steps:
            batch = next(batches)
            x = normalise(batch["pose"].to(device), stats)
            with _autocast(device):
                losses = model.loss(x, batch["length"].to(device))
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                row = {"step": step, **{k: round(v.item(), 6) for k, v in losses.items()},
                       "grad_norm": round(grad.item(), 4), "lr": sched.get_last_lr()[0],
                       "s_per_step": round((time.perf_counter() - t0) / cfg.log_every, 4)}
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                t0 = time.perf_counter()
            if progress:
                progress.update(task, completed=step, description=f"pose VAE loss {losses['loss'].item():.4f}")
            if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
                last = save_checkpoint(out_dir, model, opt, step, cfg, stats)
    return last


def _progress(cfg: TrainVAEConfig):
    if not cfg.progress:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
