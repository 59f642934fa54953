"""Run folders and their checkpoints: weights in safetensors with a JSON sidecar that describes them (kind, full
config, training manifest and its sha256, step), the frozen stages a run builds on copied in, and the check that a
resumed run is the same run (same settings, same data).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from posetalk_data.shards import sha256_file
from posetalk_models import __version__


# ------------------------------------------------------------------ checkpoints
def checkpoints(run_dir: Path) -> list[Path]:
    """The run's model checkpoints, oldest first (a GAN's step-N.disc.safetensors are not among them)."""
    return sorted(p for p in Path(run_dir).glob("step-*.safetensors") if re.fullmatch(r"step-\d+\.safetensors", p.name))


def last_checkpoint(run_dir: str | Path) -> tuple[Path | None, dict | None]:
    """(path, sidecar) of a run folder's newest checkpoint, or a .safetensors path's own; (None, None) if none."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.suffix == ".safetensors" else (checkpoints(run_dir) or [None])[-1]
    if path is None:
        return None, None
    return path, json.loads(path.with_suffix(".json").read_text())


def require_checkpoint(run_dir: str | Path, what: str) -> tuple[Path, dict]:
    path, sidecar = last_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no step-*.safetensors checkpoint of a {what} run "
                                f"(train one with `posetalk-train {what} --out {run_dir}`)")
    return path, sidecar


def copy_stage(run_dir: Path, name: str, from_run: str | Path | None, *, build: Callable[[dict], nn.Module],
               flag: str = "", device="cpu") -> tuple[nn.Module, dict]:
    """(frozen model in eval mode, sidecar) of a stage `name` a run is trained over (a PLD run's VAE, a refine run's
    CoarseNet, ...): the run's own copy (run_dir/<name>.safetensors + .json) when it has one, else `from_run`'s own
    copy of `name` or its last checkpoint, copied in, so a run folder is complete on its own. `build(sidecar)` makes
    the empty model."""
    copy = Path(run_dir) / f"{name}.safetensors"
    if copy.exists():
        path, sidecar = copy, json.loads(copy.with_suffix(".json").read_text())
    elif from_run is None:
        raise ValueError(f"{run_dir} is a new run: name the trained {name} run it builds on with {flag} RUN")
    elif (Path(from_run) / copy.name).is_file():      # an earlier stage's own copy (an enhance run's CoarseNet)
        path = Path(from_run) / copy.name
        sidecar = json.loads(path.with_suffix(".json").read_text())
    else:
        path, sidecar = require_checkpoint(from_run, name)
        if sidecar.get("kind", name) != name:
            raise ValueError(f"{from_run} is a {sidecar.get('kind')} run, not a {name} run ({flag})")
        sidecar = {**sidecar, "copied_from": str(path)}
    model = load_weights(build(sidecar), path, device)
    if path != copy:
        copy.parent.mkdir(parents=True, exist_ok=True)
        save_weights(copy, model, sidecar)
    return model.to(device).eval().requires_grad_(False), sidecar


def save_weights(path: Path, model: nn.Module, sidecar: dict) -> Path:
    """Weights (float32, CPU) in safetensors and the sidecar JSON; the weights appear last, by rename, so a listed
    checkpoint is always complete."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")   # per process: DDP ranks may write the same file at once
    save_file(state, str(tmp), metadata={"posetalk": __version__})
    tmp.with_suffix(".json").write_text(json.dumps({**sidecar, "posetalk_version": __version__}, indent=1))
    tmp.with_suffix(".json").replace(path.with_suffix(".json"))
    tmp.replace(path)
    return path


def load_weights(model: nn.Module, path: Path, device: str | torch.device = "cpu") -> nn.Module:
    model.load_state_dict(load_file(str(path), device=str(device)))
    return model


def companions(path: Path) -> list[Path]:
    """The files a checkpoint step-N.safetensors comes with: its sidecar, optimiser state and a GAN's discriminator."""
    return [path.with_suffix(s) for s in (".json", ".opt.pt", ".disc.safetensors", ".disc.json", ".disc.opt.pt")]


def save_checkpoint(run_dir: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, sidecar: dict,
                    keep: int, adversary=None) -> Path:
    path = run_dir / f"step-{step:08d}.safetensors"
    torch.save(opt.state_dict(), path.with_suffix(".opt.pt"))
    if adversary is not None:
        adversary.save(path)
    save_weights(path, model, {**sidecar, "step": step})     # last: a listed checkpoint is complete
    for old in checkpoints(run_dir)[:-keep]:
        for p in (old, *companions(old)):
            p.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------ resuming
# Loop settings that may change between the runs of one training run: how long, how often, where, how shown.
RESUMABLE = {"loop.max_steps", "loop.num_workers", "loop.progress", "loop.log_every", "loop.ckpt_every",
             "loop.keep_checkpoints", "loop.device", "loop.tensorboard"}


class ResumeMismatch(ValueError):
    """A run folder resumed with another config or other training data than it was started with."""


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_differences(saved: dict, now: dict) -> list[str]:
    """'key: was A, now B' for every config value (outside RESUMABLE) and training input that differs between a
    run's last checkpoint sidecar and the sidecar this run would write."""
    # through JSON, as the saved sidecar went: a tuple in the config is a list on disk
    before, after = _flat(saved.get("config", {})), _flat(json.loads(json.dumps(now.get("config", {}))))
    diffs = [f"{k}: was {before.get(k)!r}, now {after.get(k)!r}" for k in sorted(before.keys() | after.keys())
             if k not in RESUMABLE and before.get(k) != after.get(k)]
    for key in ("manifest_sha256", "kind"):
        if key in saved and saved[key] != now.get(key):
            what = f"the training manifest ({saved.get('manifest')} then, {now.get('manifest')} now)" \
                if key == "manifest_sha256" else key
            diffs.append(f"{what}: changed")
    return diffs


def run_record(kind: str, cfg, manifest: str | Path) -> dict:
    """The part of every checkpoint sidecar that says what a run is: model kind, full config, training data."""
    return {"kind": kind, "config": cfg.model_dump(), "manifest": str(manifest),
            "manifest_sha256": sha256_file(Path(manifest))}


def check_resume(run_dir: str | Path, sidecar: dict) -> None:
    """Refuse to continue a run with other settings or data: one line listing what differs (ResumeMismatch)."""
    _, saved = last_checkpoint(run_dir)
    if saved is None:
        return
    diffs = resume_differences(saved, sidecar)
    if diffs:
        raise ResumeMismatch(f"{run_dir} is a run started with other settings; resuming it would mix them "
                             f"({'; '.join(diffs)}). Use a new --out, or the run's own settings and manifest.")
