"""Checkpoint files of a run folder: weights in safetensors with a JSON sidecar that describes them (kind, full
config, training manifest and its sha256, step), the frozen stages a run builds on copied in, and the check that a
resumed run is the same run (same settings, same data).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from posetalk_data.shards import sha256_file
from posetalk_models import __version__
from posetalk_models.run_paths import is_checkpoint


# ------------------------------------------------------------------ checkpoints
class CheckpointError(ValueError):
    """A checkpoint that cannot be used: weights truncated or not safetensors, a sidecar that is not a posetalk
    sidecar, or weights that do not fit the model their sidecar describes. The message names the file."""


class StageMismatch(ValueError):
    """A frozen stage named on the command line is not the copy the run folder was started over."""


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's model checkpoints, oldest first (a GAN's step-N.disc.safetensors are not among them)."""
    return sorted(p for p in Path(run_dir).glob("step-*.safetensors") if is_checkpoint(p.name))


def read_sidecar(path: Path) -> dict:
    """The JSON sidecar of a .safetensors file, checked to say what it holds (a model kind and its config)."""
    side = Path(path).with_suffix(".json")
    try:
        sidecar = json.loads(side.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{side} is missing: nothing says what {Path(path).name} holds") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{side}: damaged checkpoint sidecar, not JSON ({err})") from None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("kind"), str) \
            or not isinstance(sidecar.get("config"), dict):
        raise CheckpointError(f"{side}: damaged checkpoint sidecar (no model kind and config in it)")
    return sidecar


def last_checkpoint(run_dir: str | Path) -> tuple[Path | None, dict | None]:
    """(path, sidecar) of a run folder's newest checkpoint, or a .safetensors path's own; (None, None) if none."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.suffix == ".safetensors" else (checkpoints(run_dir) or [None])[-1]
    if path is None:
        return None, None
    return path, read_sidecar(path)


def require_checkpoint(run_dir: str | Path, what: str) -> tuple[Path, dict]:
    path, sidecar = last_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no step-*.safetensors checkpoint of a {what} run "
                                f"(train one with `posetalk-train {what} --out {run_dir}`)")
    return path, sidecar


def _stage_source(name: str, from_run: str | Path, flag: str) -> tuple[Path, dict]:
    """(weights, sidecar) of stage `name` in the run named by `flag`: its own copy of `name` (an enhance run's
    source is a refine run, whose CoarseNet is its copy), else its last checkpoint."""
    own = Path(from_run) / f"{name}.safetensors"
    if own.is_file():
        return own, read_sidecar(own)
    path, sidecar = require_checkpoint(from_run, name)
    if sidecar["kind"] != name:
        raise ValueError(f"{from_run} is a {sidecar['kind']} run, not a {name} run ({flag})")
    return path, {**sidecar, "copied_from": str(path)}


def _stage_differences(copy: Path, copied: dict, path: Path, sidecar: dict) -> list[str]:
    """What differs between a run's copy of a stage and the stage a flag names now: config, step, weights."""
    before, after = _flat(copied["config"]), _flat(sidecar["config"])
    diffs = [f"{k}: was {before.get(k)!r}, now {after.get(k)!r}" for k in sorted(before.keys() | after.keys())
             if before.get(k) != after.get(k)]
    if copied.get("step") != sidecar.get("step"):
        diffs.append(f"step: was {copied.get('step')}, now {sidecar.get('step')}")
    mine, theirs = _tensors(copy), _tensors(path)
    if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k]) for k in mine):
        diffs.append(f"weights: copied from {copied.get('copied_from', '?')}, now {path} holds others")
    return diffs


def copy_stage(run_dir: Path, name: str, from_run: str | Path | None, *, build: Callable[[dict], nn.Module],
               flag: str = "", device="cpu") -> tuple[nn.Module, dict]:
    """(frozen model in eval mode, sidecar) of a stage `name` a run is trained over (a PLD run's VAE, a refine run's
    CoarseNet, ...): the run's own copy (run_dir/<name>.safetensors + .json) when it has one, else `from_run`'s own
    copy of `name` or its last checkpoint, copied in, so a run folder is complete on its own. `build(sidecar)` makes
    the empty model. A `from_run` named while the run has its copy must hold that same stage (StageMismatch)."""
    copy = Path(run_dir) / f"{name}.safetensors"
    if copy.exists():
        path, sidecar = copy, read_sidecar(copy)
        if from_run is not None:
            _check_same_stage(run_dir, copy, sidecar, _stage_source(name, from_run, flag), f"{flag} {from_run}")
    elif from_run is None:
        raise ValueError(f"{run_dir} is a new run: name the trained {name} run it builds on with {flag} RUN")
    else:
        path, sidecar = _stage_source(name, from_run, flag)
    model = load_model(path, sidecar, build, device)
    if path != copy:
        copy.parent.mkdir(parents=True, exist_ok=True)
        save_weights(copy, model, sidecar)
    return model.to(device).eval().requires_grad_(False), sidecar


def _check_same_stage(run_dir: Path, copy: Path, copied: dict, source: tuple[Path, dict], named: str) -> None:
    diffs = _stage_differences(copy, copied, *source)
    if not diffs:
        return
    if checkpoints(run_dir):
        step = "leave out the flag to continue over the run's own copy, or use a new --out to train over the other"
    else:
        step = (f"{run_dir} has no checkpoint yet, so the copy is left from an earlier attempt: remove {copy.name} "
                f"and {copy.with_suffix('.json').name} from it, or use a new --out")
    raise StageMismatch(f"{named} is not the {copied['kind']} this run was started over ({copy}): "
                        f"{'; '.join(diffs[:6])}{' ...' if len(diffs) > 6 else ''}. To go on, {step}")


def temporary(path: Path) -> Path:
    """A name beside `path` for writing it before the rename; per process: DDP ranks may write one file at once."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def save_weights(path: Path, model: nn.Module, sidecar: dict) -> Path:
    """Weights (float32, CPU) in safetensors and the sidecar JSON, each written under a temporary name and renamed:
    the sidecar first, the weights last, so a .safetensors under its own name always has its complete sidecar (a
    kill in between leaves a sidecar without weights, which no reader lists)."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    weights, side = temporary(path), temporary(path.with_suffix(".json"))
    save_file(state, str(weights), metadata={"posetalk": __version__})
    side.write_text(json.dumps({**sidecar, "posetalk_version": __version__}, indent=1))
    side.replace(path.with_suffix(".json"))
    weights.replace(path)
    return path


def save_state(path: Path, state: dict) -> None:
    """torch.save under a temporary name, then renamed: an optimiser state on disk is always complete."""
    tmp = temporary(path)
    torch.save(state, tmp)
    tmp.replace(path)


def _tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as err:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({err})") from None


def load_weights(model: nn.Module, path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The weights of `path` into `model`; CheckpointError naming the file when they are unreadable or do not fit."""
    state, want = _tensors(path, device), model.state_dict()
    other = [f"{k} {tuple(state[k].shape)} in the file, {tuple(want[k].shape)} in the model" for k in want
             if k in state and state[k].shape != want[k].shape]
    missing, extra = want.keys() - state.keys(), state.keys() - want.keys()
    if other or missing or extra:
        raise CheckpointError(
            f"{path}: the weights do not fit the model its sidecar {path.with_suffix('.json').name} describes "
            f"({len(other)} tensors of another shape{', e.g. ' + other[0] if other else ''}; {len(missing)} missing, "
            f"{len(extra)} unexpected): the sidecar was edited or belongs to other weights")
    model.load_state_dict(state)
    return model


def load_model(path: Path, sidecar: dict, build: Callable[[dict], nn.Module], device="cpu") -> nn.Module:
    """The model a checkpoint's sidecar describes (`build(sidecar)`) with the checkpoint's weights."""
    try:
        model = build(sidecar)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{Path(path).with_suffix('.json')}: its config does not describe a "
                              f"{sidecar.get('kind')} model ({' '.join(str(err).split())})") from None
    return load_weights(model, path, device)


def load_state(path: Path, device) -> dict:
    """An optimiser state saved by save_state; CheckpointError naming the file when it is missing or damaged."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing (the optimiser state of {path.name.split('.')[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or damaged optimiser state ({' '.join(str(err).split())})") from None


def companions(path: Path) -> list[Path]:
    """The files a checkpoint step-N.safetensors comes with: its sidecar, optimiser state and a GAN's discriminator."""
    return [path.with_suffix(s) for s in (".json", ".opt.pt", ".disc.safetensors", ".disc.json", ".disc.opt.pt")]


def save_checkpoint(run_dir: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, sidecar: dict,
                    keep: int, adversary=None) -> Path:
    """step-N.safetensors and its companions. Every file is written whole under a temporary name and renamed, the
    model's weights last: a checkpoint is listed (`checkpoints`) only once all of it is complete, so a run killed
    while writing one resumes from the one before."""
    path = run_dir / f"step-{step:08d}.safetensors"
    save_state(path.with_suffix(".opt.pt"), opt.state_dict())
    if adversary is not None:
        adversary.save(path)
    save_weights(path, model, {**sidecar, "step": step})     # last: a listed checkpoint is complete
    for old in checkpoints(run_dir)[:-keep]:
        for p in (old, *companions(old)):   # the weights first: a checkpoint half removed is no longer listed
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
            "manifest_sha256": sha256_file(manifest)}      # a path or a URL (storage.sha256_of)


def check_resume(run_dir: str | Path, sidecar: dict) -> None:
    """Refuse to continue a run with other settings or data: one line listing what differs (ResumeMismatch)."""
    _, saved = last_checkpoint(run_dir)
    if saved is None:
        return
    diffs = resume_differences(saved, sidecar)
    if diffs:
        raise ResumeMismatch(f"{run_dir} is a run started with other settings; resuming it would mix them "
                             f"({'; '.join(diffs)}). Use a new --out, or the run's own settings and manifest.")
