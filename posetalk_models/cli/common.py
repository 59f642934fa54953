"""What the three model commands (posetalk-train, posetalk-generate / posetalk-pose, posetalk-eval) share: ONE error
style. A user's mistake is one line on stderr, `error: <what is wrong and the next step>`, exit code 2, no traceback
(POSETALK_DEBUG=1 shows it); plus the checks every command makes of a device and a run folder argument."""
from __future__ import annotations

import contextlib
import json
import os
import tarfile
from pathlib import Path

import typer


def fail(message: str) -> None:
    """An expected problem (bad input, missing weights): one line on stderr, exit code 2, no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def user_errors():
    """Turn the errors a user's input can cause (a bad manifest, config, media file or run folder, missing weights,
    a refused resume) into one line and exit code 2. POSETALK_DEBUG=1 shows the traceback instead."""
    from posetalk_data.config import ConfigError
    from posetalk_data.media import MediaError

    try:
        yield
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, MediaError, ConfigError,
            tarfile.TarError) as err:
        if os.environ.get("POSETALK_DEBUG"):
            raise
        fail(str(err))


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N, and a GPU present for cuda: one line now rather than a traceback from inside torch."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        fail(f"--device {device}: not a device; use cpu, cuda or cuda:N")
    if kind not in ("cpu", "cuda"):
        fail(f"--device {device}: use cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        fail(f"--device {device}: no CUDA GPU is usable here (torch.cuda.is_available() is false); use --device cpu")


def run_folder(run: Path | None) -> Path | None:
    """What a run argument makes the command read: the whole run folder, also when one checkpoint is named."""
    return run.parent if run is not None and run.suffix == ".safetensors" else run


@contextlib.contextmanager
def loading_run(run: Path, flag: str):
    """A run that fails to load for a reason the loader does not name (a damaged file): one line naming the run."""
    from pydantic import ValidationError
    from safetensors import SafetensorError

    from posetalk_models.checkpoints import CheckpointError

    try:
        yield
    except CheckpointError:
        raise
    except (SafetensorError, RuntimeError, KeyError, TypeError, AttributeError, json.JSONDecodeError,
            ValidationError) as err:
        raise ValueError(f"{flag} {run}: a checkpoint or sidecar in it cannot be loaded "
                         f"({' '.join(str(err).split())[:200]}); it may be damaged or edited") from err


def check_manifest(manifest: Path, flag: str = "--manifest") -> None:
    if not manifest.is_file():
        fail(f"{flag} {manifest}: no such file" if not manifest.exists() else
             f"{flag} {manifest} is a folder; name its manifest.json")
