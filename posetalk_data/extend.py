"""`posetalk-data extend`: add or replace feature layers (speech features, text embeddings) of an existing build
without recomputing the visual stages.

Each shard is read (safely), every sample gets the new layers computed from its own audio.flac, pose.npy and
text.json, and the shard is written again under a temporary name, then renamed; the manifest (members, versions,
shard checksums) is rewritten last. Every shard's sha256 is checked against the manifest before any is touched: a
damaged shard is refused by name, never rewritten into one that verifies. Each rewritten shard's new sha256 is
noted in a journal beside the manifest (`manifest.json.extending`) as soon as it is renamed, so an extend killed
before the manifest was written is run again with the same command: shards matching the journal are accepted as
this tool's own writes, and the journal is removed once the manifest is.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from . import storage
from .config import PipelineConfig
from .reading import ManifestError, load_manifest, open_shard, safe_samples, shard_location
from .members import flac_samples, npy_bytes
from .shards import write_tar
from .verify import shard_checksum
from .stages.features import clip_text, make_speech_backend, make_text_encoder, speech_layer, text_layer

SPEECH_FEATURES = ("mel", "wav2vec2", "hubert")
TEXT_FEATURES = ("clip", "minilm")


def plan_layers(features: list[str], cfg: PipelineConfig) -> tuple[list, list]:
    """(speech backends, text encoders) for the requested feature names, configured from cfg's sections."""
    unknown = sorted(set(features) - set(SPEECH_FEATURES) - set(TEXT_FEATURES))
    if unknown or not features:
        raise ValueError(f"unknown feature layer(s) {unknown or features}: choose from "
                         f"{', '.join(SPEECH_FEATURES + TEXT_FEATURES)}")
    speech = [make_speech_backend(cfg.speech.model_copy(update={"backend": f})) for f in features
              if f in SPEECH_FEATURES]
    text = [make_text_encoder(cfg.text.model_copy(update={"encoder": f})) for f in features if f in TEXT_FEATURES]
    return speech, text


def extend_sample(members: dict[str, bytes], key: str, speech: list, text: list, n_prompts: int) -> dict[str, bytes]:
    frames = json.loads(members["meta.json"])["frames"]
    out = dict(members)
    if speech:
        audio = flac_samples(members["audio.flac"])
        for backend in speech:
            out[backend.member_name] = npy_bytes(backend.features(audio, frames))
    if text:
        if "text.json" not in out:    # a build from before text layers: write the prompts first
            pose = np.load(io.BytesIO(members["pose.npy"]), allow_pickle=False)
            meta = json.loads(members["meta.json"])
            out["text.json"] = json.dumps(clip_text(key, pose, meta.get("extra", {}), n_prompts), indent=1,
                                          sort_keys=True).encode()
        prompts = json.loads(out["text.json"])["prompts"]
        for encoder in text:
            out[encoder.member_name] = npy_bytes(encoder.encode(prompts))
    return out


def extend(manifest_path: Path | str, features: list[str], cfg: PipelineConfig, progress=None) -> dict:
    """Add or replace the feature layers in every shard of a build (on disk or in a store); returns the updated
    manifest."""
    manifest_path = storage.location(manifest_path)
    manifest = load_manifest(manifest_path)
    if manifest.get("manifest_version", 1) != 1:
        raise ValueError("extend works on a build's own manifest.json, not on a filtered/split/merged one "
                         "(their shards are shared with the build they came from)")
    speech, text = plan_layers(features, cfg)
    for model in (*speech, *text):
        model.check()          # before any shard is touched
    base = storage.parent(manifest_path)
    journal = storage.join(base, storage.name(manifest_path) + ".extending")
    written = storage.read_json(journal) if storage.is_file(journal) else {}   # an interrupted extend's shards
    for shard in manifest["shards"]:
        if shard_checksum(base, shard) not in (shard.get("sha256"), written.get(shard["path"])):
            raise ManifestError(f"{shard_location(base, shard['path'])}: missing, or its sha256 differs from the manifest's: the "
                                "shard is damaged or was changed, and extend does not rewrite it. See `posetalk-data "
                                "manifest verify`; rebuild or restore the shard first.")
    for model in (*speech, *text):
        model.setup()
    for shard in manifest["shards"]:
        samples = [(key, extend_sample(members, key, speech, text, cfg.text.prompts))   # one shard in memory:
                   for key, members in safe_samples(open_shard(base, shard["path"]))]  # read fully, then replace it
        digest, size = write_tar(shard_location(base, shard["path"]), samples)
        shard.update(sha256=digest, bytes=size)
        written[shard["path"]] = shard["sha256"]
        storage.write_json(journal, written)
        if progress:
            progress(shard["path"])
    for backend in speech:
        manifest["members"][backend.member_name] = speech_layer(backend.member_name, backend.name).description
        manifest["versions"][backend.member_name] = json.dumps(backend.versions(), sort_keys=True, default=str)
    for encoder in text:
        manifest["members"][encoder.member_name] = text_layer(encoder.member_name, encoder.name).description
        manifest["versions"][encoder.member_name] = json.dumps(encoder.versions(), sort_keys=True, default=str)
    manifest["members"].setdefault("text.json", "the clip's motion prompts and where they came from")
    manifest.setdefault("extended", []).append({"features": features, "speech": cfg.speech.model_dump(mode="json"),
                                                "text": cfg.text.model_dump(mode="json")})
    storage.write_json(manifest_path, manifest)
    storage.remove(journal)
    return manifest

