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
    except store_errors() as err:      # a store (or disk) that failed mid-way: reading a URL manifest's shards
        if os.environ.get("POSETALK_DEBUG"):
            raise
        fail(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")


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


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store can answer (unreachable, refused, no credentials): the data commands' list, shared."""
    from posetalk_data.cli_output import storage_errors

    return storage_errors()


def reachable(loc, flag: str):
    """Run a storage query on an option's location; a store that cannot be reached is one line naming the option."""
    try:
        return loc()
    except store_errors() as err:
        fail(f"{flag}: cannot reach it ({type(err).__name__}: {' '.join(str(err).split())[:200]}); check the URL, "
             "the credentials (AWS_* variables, ~/.aws) and the endpoint (AWS_ENDPOINT_URL)")


def location(text: str | None) -> "str | Path | None":
    """An input option as the storage layer keeps it: a Path for this disk (file:// stripped), the URL text for a
    store (options are str: a typer Path would turn s3://b/x into s3:/b/x)."""
    from posetalk_data import storage

    return None if text is None else storage.location(text)


def input_file(text: str | None, flag: str) -> "str | Path | None":
    """An input file option that may be a URL: its location, refused in one line when there is no file there."""
    from posetalk_data import storage

    loc = location(text)
    if loc is not None and not reachable(lambda: storage.is_file(loc), f"{flag} {loc}"):
        fail(f"{flag} {loc}: no such file")
    return loc


def local_folder(text: str | None, flag: str) -> Path | None:
    """A training run folder option: this machine's disk only (a run holds a lock and is resumed in place); a store
    URL is refused rather than written to a local folder named like it."""
    from posetalk_data import storage

    if text is not None and storage.is_url(text):
        fail(f"{flag} {text}: a training run folder stays on this machine's disk (it holds a lock and is resumed in "
             "place); give a local folder and copy the run to the store afterwards (posetalk-generate and "
             "posetalk-eval read runs from URLs)")
    return None if text is None else storage.local(text)


def check_manifest(manifest: str | None, flag: str = "--manifest") -> "str | Path | None":
    """A manifest option's location (a path or URL), refused in one line when there is no such file there."""
    from posetalk_data import storage

    manifest = location(manifest)
    if manifest is not None and not reachable(lambda: storage.is_file(manifest), f"{flag} {manifest}"):
        exists = reachable(lambda: storage.exists(manifest), f"{flag} {manifest}")
        fail(f"{flag} {manifest}: no such file" if not exists else
             f"{flag} {manifest} is a folder; name its manifest.json")
    return manifest
