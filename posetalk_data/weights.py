"""Where model weights come from, shared by the speech and text encoders: never from the network during a build.

Weights are found in a folder the config names, or in the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`, or an
explicit `cache_dir`), and nowhere else. A missing weight is a `WeightsMissing` raised at once (a file lookup,
no hub request, so no retry loop), naming the model and the three ways to provide it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

# File names transformers / open_clip load, safest first.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


class WeightsMissing(FileNotFoundError):
    """A model's weights are not on this machine. The message says which model and how to provide them."""


def missing_message(what: str, model_id: str, looked: list[str], local_key: str) -> str:
    where = "; ".join(looked) if looked else "nowhere"
    return (
        f"{what} weights for '{model_id}' are not on this machine (looked in: {where}). posetalk never downloads "
        f"weights during a build. Provide them in one of three ways: (1) on a machine with internet run "
        f"`posetalk-data models pull` (or `hf download {model_id}`) and copy the Hugging Face cache here; "
        f"(2) set HF_HOME to a folder that holds a copied Hugging Face cache; (3) set `{local_key}` in the "
        f"pipeline YAML to a local copy of the model. Or build with the `offline` profile "
        f"(mel + MiniLM), which needs no downloaded weights."
    )


def torch_hub_checkpoint(filename: str) -> Path:
    """Where torch.hub (and torchvision, face-alignment) keep a downloaded checkpoint:
    $TORCH_HOME/hub/checkpoints/<filename> (default ~/.cache/torch). torch.hub.get_dir()'s rule, without importing
    torch just to say a file is missing."""
    import os

    cache = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(cache).expanduser() / "hub" / "checkpoints" / filename


def checkpoint_file(what: str, path: str | Path | None, filename: str, url: str, key: str) -> Path:
    """A weight file given by path (`key` in a config or a flag), else the torch hub cache's; WeightsMissing naming
    the file, where it was looked for and how to provide it."""
    found = Path(path).expanduser() if path else torch_hub_checkpoint(filename)
    if not found.is_file():
        raise WeightsMissing(f"{what} weights not found at {found}. posetalk never downloads weights: on a machine "
                             f"with internet download {url} and place it at {torch_hub_checkpoint(filename)} "
                             f"(the torch hub cache, $TORCH_HOME/hub/checkpoints), or give its path with {key}.")
    return found


def hf_cache_dir(cache_dir: str | Path | None = None) -> str:
    from huggingface_hub import constants
    return str(cache_dir or constants.HF_HUB_CACHE)


def hf_cached_file(repo_id: str, filenames: tuple[str, ...], *, revision: str | None = None,
                   cache_dir: str | Path | None = None) -> Path | None:
    """First of `filenames` present in the local Hugging Face cache for repo_id@revision, else None.

    A pure file lookup (huggingface_hub.try_to_load_from_cache): no request, whatever HF_HUB_OFFLINE says."""
    from huggingface_hub import try_to_load_from_cache
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision)
        if isinstance(found, str) and Path(found).is_file():   # None / _CACHED_NO_EXIST mean "not here"
            return Path(found)
    return None


def hf_snapshot(repo_id: str, *, revision: str | None = None,
                cache_dir: str | Path | None = None) -> tuple[Path, str] | None:
    """(snapshot folder, commit hash) of a cached transformers model with its config and weights, else None."""
    config = hf_cached_file(repo_id, ("config.json",), revision=revision, cache_dir=cache_dir)
    if config is None or not has_hf_weights(config.parent):
        return None
    return config.parent, config.parent.name     # .../snapshots/<commit>/config.json


def has_hf_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in HF_WEIGHT_FILES)


def state_dict_sha256(module) -> str:
    """sha256 over a torch module's state dict: per tensor, sorted by name, its name, dtype, shape and bytes.

    Hashing the loaded tensors (not the files) identifies the weights actually used, whatever the file format
    (.bin or .safetensors) or the unused heads a checkpoint also carries. Call it before any fp16 cast."""
    import torch
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pull_hf(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """Download a model's config, preprocessor config and weights into the Hugging Face cache (needs internet).

    For a `models pull` command run by the user, never inside a build."""
    from huggingface_hub import snapshot_download

    def get(patterns: list[str]) -> Path:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))

    folder = get(["*.json", "*.txt", "*.safetensors"])
    if not any(folder.glob("*.safetensors")):        # older repos ship only pickled weights
        folder = get(["*.bin"])
    return folder
