"""Where model weights come from, shared by the speech and text encoders: never from the network during a build.

Weights are found in a folder the config names, or in the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`, or an
explicit `cache_dir`), and nowhere else. A missing weight is a `WeightsMissing` raised at once (a file lookup,
no hub request, so no retry loop), naming the model and the three ways to provide it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

# File names transformers / open_clip load, safest first.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


class WeightsMissing(FileNotFoundError):
    """A model's weights are not on this machine. The message says which model and how to provide them."""


def missing_message(what: str, model_id: str, looked: list[str], local_key: str, pull: str | None = None) -> str:
    """`pull`: the name `posetalk-data models pull --only` fetches this model by."""
    where = "; ".join(looked) if looked else "nowhere"
    command = pull_command(pull) if pull else "posetalk-data models pull"
    return (
        f"{what} weights for '{model_id}' are not on this machine (looked in: {where}). posetalk never downloads "
        f"weights during a build. Provide them in one of three ways: (1) on a machine with internet run "
        f"`{command}` (or `hf download {model_id}`) and copy the Hugging Face cache here; "
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


def pull_command(name: str) -> str:
    return f"posetalk-data models pull --only {name}"


@dataclass(frozen=True)
class WeightFile:
    """A single weight file the trainers or the evaluator read from the torch hub cache, and where it comes from.

    `sha256` is the full digest where one is published; None means only the prefix torch.hub-style file names
    carry (`name-<sha256 prefix>.ext`) can be checked, which is what torch.hub's own check_hash does."""
    name: str
    filename: str
    url: str
    sha256: str | None
    used_by: str

    @property
    def path(self) -> Path:
        return torch_hub_checkpoint(self.filename)

    @property
    def digest(self) -> str:
        """The full sha256, or the prefix the file name carries: what a download must start with."""
        if self.sha256:
            return self.sha256
        found = re.search(r"-([a-f0-9]{8,})\.", self.filename)     # torch.hub's HASH_REGEX, at least 8 digits
        if not found:
            raise ValueError(f"{self.name}: no sha256 and no hash prefix in the file name {self.filename}")
        return found.group(1)


# Everything outside the Hugging Face cache that a trainer or the evaluator can load. torchvision's files carry the
# first 8 hex digits of their sha256 in the name; that prefix is what torch.hub checks, and it is all that is checked
# here, since torchvision publishes no full digest. The FAN and SyncNet digests are the ones pinned in several public
# projects that verify these files (FAN's also starts with the 10 digits its author put in the file name).
WEIGHT_FILES = {f.name: f for f in (
    WeightFile("vgg19", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", None,
               "posetalk-train coarse/refine/enhance: the VGG19 perceptual loss (loss.perceptual > 0)"),
    WeightFile("alexnet", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
               None, "posetalk-eval: LPIPS (its AlexNet backbone)"),
    WeightFile("syncnet", "syncnet_v2.model", "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
               "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442",
               "posetalk-eval: LSE-D / LSE-C (SyncNet v2, joonson/syncnet_python)"),
    WeightFile("fan", "2DFAN4-11f355bf06.pth.tar",
               "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
               "11f355bf0693120222f5955ce3f9dc8fb5763ebb30a47d7906e509490d32e4aa",
               "posetalk-data build with landmarks.backend: fan (face-alignment's 2DFAN4, 68 points)"),
)}


def checkpoint_file(what: str, path: str | Path | None, name: str, key: str) -> Path:
    """A weight file given by path (`key` in a config or a flag), else the registry file `name` in the torch hub
    cache; WeightsMissing naming the file, where it was looked for and how to provide it."""
    entry = WEIGHT_FILES[name]
    found = Path(path).expanduser() if path else entry.path
    if not found.is_file():
        raise WeightsMissing(f"{what} weights not found at {found}. posetalk never downloads weights while it runs: "
                             f"on a machine with internet run `{pull_command(name)}` (it places {entry.url} at "
                             f"{entry.path}, the torch hub cache, $TORCH_HOME/hub/checkpoints), or give its path "
                             f"with {key}.")
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


def state_dict_sha256(module, prefix: str = "") -> str:
    """sha256 over a torch module's state dict: per tensor, sorted by name, its name (after `prefix`: the names a
    wrapping module would give them), dtype, shape and bytes.

    Hashing the loaded tensors (not the files) identifies the weights actually used, whatever the file format
    (.bin or .safetensors) or the unused heads a checkpoint also carries. Call it before any fp16 cast."""
    import torch
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{prefix}{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
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
