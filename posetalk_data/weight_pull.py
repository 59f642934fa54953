"""Every weight the builds, trainers and evaluator can use, fetched and checked on a user's request
(`posetalk-data models pull`, `models list`). Builds, trainers and the evaluator themselves never download.

Two kinds: Hugging Face models (speech, CLIP), pulled into the Hugging Face cache and found by the encoders' own
`check()`; and single files (weights.WEIGHT_FILES) placed in the torch hub cache, each download checked against its
sha256 (or the prefix its file name carries) before it is moved into place. POSETALK_WEIGHTS_MIRROR names a base URL
that serves the files by their file names (an internal mirror; the tests' local server) instead of their origins.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import weights
from .config import PipelineConfig, SpeechConfig
from .weights import WeightFile, WeightsMissing

MIRROR_ENV = "POSETALK_WEIGHTS_MIRROR"


class PullError(RuntimeError):
    """A weight could not be fetched or failed its check; the message says which, why, and what was left where."""


@dataclass(frozen=True)
class HubModel:
    """A Hugging Face model an encoder loads; `locate` is the encoder's own lookup (a path, or WeightsMissing)."""
    name: str
    repo_id: str
    revision: str | None
    used_by: str
    locate: Callable[[], Path]


def hub_models(cfg: PipelineConfig) -> dict[str, HubModel]:
    """The speech models and CLIP as `cfg` names them (its model, revision and local folder for the backend it
    selects; the defaults for the other)."""
    from .stages.features import make_speech_backend, make_text_encoder

    out = {}
    for kind in ("hubert", "wav2vec2"):
        backend = make_speech_backend(cfg.speech if cfg.speech.backend == kind else SpeechConfig(backend=kind))
        out[kind] = HubModel(kind, backend.model_id, backend.revision,
                             f"posetalk-data build / extend with speech.backend: {kind}",
                             lambda backend=backend: backend.check()[0])
    clip = make_text_encoder(cfg.text.model_copy(update={"encoder": "clip"}))
    out["clip"] = HubModel("clip", clip_repo(cfg.text.model, cfg.text.pretrained), None,
                           "posetalk-data build / extend with text.encoder: clip", lambda: clip.check()[0])
    return out


def clip_repo(model: str, pretrained: str | None) -> str:
    import open_clip

    hub = open_clip.get_pretrained_cfg(model, pretrained).get("hf_hub", "").strip("/") if pretrained else ""
    return "/".join(hub.split("/")[:2]) or f"{model}/{pretrained}"


def profile_names(cfg: PipelineConfig) -> list[str]:
    """What a plain `models pull` fetches: the profile's speech model and CLIP if it uses them, and every file."""
    speech = [cfg.speech.backend] if cfg.speech.backend != "mel" else []
    return speech + (["clip"] if cfg.text.encoder == "clip" else []) + list(weights.WEIGHT_FILES)


def all_names() -> list[str]:
    return ["hubert", "wav2vec2", "clip", *weights.WEIGHT_FILES]


def source_url(entry: WeightFile) -> str:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{entry.filename}" if mirror else entry.url


def check_kind(entry: WeightFile) -> str:
    return "sha256" if entry.sha256 else f"sha256 prefix {entry.digest} from the file name"


def matches(entry: WeightFile, path: Path) -> tuple[bool, str]:
    """(whether the file at `path` has the entry's digest, its sha256)."""
    from .shards import sha256_file

    digest = sha256_file(path)
    return digest.startswith(entry.digest), digest


def pull_file(entry: WeightFile) -> str:
    """Download `entry` into the torch hub cache, checked before it is moved into place (torch.hub writes to a
    .partial file beside it and removes that on any failure). A file already there is checked, never replaced."""
    dest = entry.path
    if dest.exists():
        ok, digest = matches(entry, dest)
        if ok:
            return f"already at {dest} ({check_kind(entry)} checked)"
        raise PullError(f"{entry.name}: {dest} is already there but its sha256 is {digest}, not {entry.digest}...; "
                        "it was left as it is: move it away and pull again")
    import torch.hub

    url = source_url(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=entry.digest, progress=sys.stderr.isatty())
    except RuntimeError as err:        # torch.hub's "invalid hash value (expected ..., got ...)"
        raise PullError(f"{entry.name}: the download from {url} failed its {check_kind(entry)} check ({err}); "
                        f"nothing was placed at {dest}") from None
    except OSError as err:             # URLError, HTTPError, a full disk
        raise PullError(f"{entry.name}: could not download {url}: {err}") from None
    return f"placed at {dest} ({check_kind(entry)} checked)"


def pull_hub(model: HubModel) -> str:
    try:
        return f"{model.repo_id} in the Hugging Face cache: {weights.pull_hf(model.repo_id, revision=model.revision)}"
    except Exception as err:   # huggingface_hub raises many kinds (offline, 404, auth); all mean "not fetched"
        raise PullError(f"{model.name}: could not download {model.repo_id}: {type(err).__name__}: {err} (this needs "
                        "internet access and HF_HUB_OFFLINE unset)") from None


@dataclass(frozen=True)
class Status:
    name: str
    state: str           # present / missing / mismatch
    where: Path | str
    check: str
    used_by: str


def file_status(entry: WeightFile, verify: bool) -> Status:
    state = "present" if entry.path.is_file() else "missing"
    if state == "present" and verify:
        state = "present, checked" if matches(entry, entry.path)[0] else "mismatch"
    return Status(entry.name, state, entry.path, check_kind(entry), entry.used_by)


def hub_status(model: HubModel) -> Status:
    try:
        where, state = model.locate(), "present"
    except WeightsMissing:
        where, state = f"Hugging Face cache {weights.hf_cache_dir()}", "missing"
    return Status(model.name, state, where, f"{model.repo_id} (Hugging Face's own etags)", model.used_by)
