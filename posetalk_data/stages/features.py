"""Stages 7b and 7c: speech features aligned to the video frames, and the clip's motion text with its embedding.

The math lives in posetalk_data.speech, .motion_text and .text_encoders; these stages adapt records to it.
Member names say which model made them (`mel.npy`, `hubert.npy`, `minilm.npy`, `clip_vit-b-32.npy`), and the
manifest's versions are keyed by the same names (model id, revision, hash of the weights actually loaded).
"""
from __future__ import annotations

import hashlib
import json

from ..config import PipelineConfig, SpeechConfig, TextConfig
from ..motion_text import describe
from ..schema import VIDEO_FPS, ClipRecord, Member
from ..speech import SpeechBackend, speech_backend
from ..text_encoders import TextEncoder, text_encoder
from .base import Resources, Stage


def speech_layer(member_name: str, model: str) -> Member:
    """The speech-feature member of a backend (its versions are recorded under its own name)."""
    return Member(member_name, f"speech features aligned to the video frames ({model})", "float16[T,D]",
                  versions=(member_name,))


def text_layer(member_name: str, model: str) -> Member:
    """The text-embedding member of an encoder (its versions are recorded under its own name)."""
    return Member(member_name, f"text embeddings, one row per prompt of text.json ({model})", "float16[P,D]",
                  versions=(member_name,))


def make_speech_backend(cfg: SpeechConfig) -> SpeechBackend:
    opts = {"window_s": cfg.window_s, "context_s": cfg.context_s}
    if cfg.backend != "mel":
        opts.update(model=cfg.model, revision=cfg.revision, local_dir=cfg.local_dir, layers=cfg.layers,
                    device=cfg.device)
    return speech_backend(cfg.backend, **opts)


def make_text_encoder(cfg: TextConfig) -> TextEncoder:
    if cfg.encoder == "clip":
        return text_encoder("clip", model=cfg.model, pretrained=cfg.pretrained, local_path=cfg.local_path)
    return text_encoder("minilm")


def clip_text(key: str, pose, extra: dict, n_prompts: int) -> dict:
    """text.json: dataset captions (CelebV-Text action descriptions) where there are some, otherwise prompts
    written from the clip's own pose track, seeded by the key so a rebuild writes the same sentences."""
    if extra.get("prompts"):
        return {"source": extra.get("prompt_source", "dataset captions"), "prompts": list(extra["prompts"])}
    return describe(pose, VIDEO_FPS, int(hashlib.sha1(key.encode()).hexdigest()[:8], 16), n=n_prompts)


class SpeechStage(Stage):
    name = "speech"
    resources = Resources(cpus=1)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.speech)

    def __init__(self, cfg: SpeechConfig):
        self.cfg = cfg
        self.backend = make_speech_backend(cfg)   # cheap: weights load in setup()
        self.layer = speech_layer(self.backend.member_name, cfg.backend)

    def inputs(self) -> list[str]:
        return ["clip_audio", "crop_box"]

    def outputs(self) -> list[str]:
        return ["speech"]

    def writes(self) -> tuple[Member, ...]:
        return (self.layer,)

    def check(self) -> None:
        self.backend.check()

    def setup(self) -> None:
        self.backend.setup()

    def versions(self) -> dict[str, str]:
        return {self.backend.member_name: json.dumps(self.backend.versions(), sort_keys=True, default=str)}

    def process(self, record: ClipRecord) -> ClipRecord:
        frames = len(record.arrays["crop_box"])
        record.arrays[self.layer.stem] = self.backend.features(record.arrays["clip_audio"], frames)
        return record


class TextStage(Stage):
    name = "text"
    resources = Resources(cpus=0.5)
    members = (Member("text.json", "the clip's motion prompts and where they came from (dataset captions or the pose "
                      "track)", "json"),)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        return cls(cfg.text)

    def __init__(self, cfg: TextConfig):
        self.cfg = cfg
        self.encoder = make_text_encoder(cfg)
        self.layer = text_layer(self.encoder.member_name, cfg.encoder)

    def inputs(self) -> list[str]:
        return ["pose"]

    def outputs(self) -> list[str]:
        return ["text", "text_embedding"]

    def writes(self) -> tuple[Member, ...]:
        return (*self.members, self.layer)

    def check(self) -> None:
        self.encoder.check()

    def setup(self) -> None:
        self.encoder.setup()

    def versions(self) -> dict[str, str]:
        return {self.encoder.member_name: json.dumps(self.encoder.versions(), sort_keys=True, default=str)}

    def process(self, record: ClipRecord) -> ClipRecord:
        text = clip_text(record.key, record.arrays["pose"], record.spec.extra, self.cfg.prompts)
        record.meta["text"] = text
        record.arrays[self.layer.stem] = self.encoder.encode(text["prompts"])
        return record
