"""What a run's names mean, without importing torch (the CLI's output checks use it before their one-line errors):
which file names are model checkpoints, and which folder a run argument (a path or a store URL) stands for."""
from __future__ import annotations

import re

from posetalk_data import storage


def is_checkpoint(name: str) -> bool:
    """A model checkpoint's file name, step-N.safetensors (a GAN's step-N.disc.safetensors is not one)."""
    return re.fullmatch(r"step-\d+\.safetensors", name) is not None


def run_folder(run):
    """The run folder a run argument names: the folder itself, or the folder of the checkpoint it names (None
    stays None)."""
    named = str(run).rstrip("/")
    return storage.parent(named) if run is not None and named.endswith(".safetensors") else run
