"""OUT/README.md: the dataset card that makes a build a Hugging Face dataset as it stands.

`datasets.load_dataset(OUT)` reads the card's `configs` (which files: shards/*.tar, WebDataset) and `dataset_info`
(the features). Declaring the features matters: without them `datasets` guesses each column's type from the first
few samples, and an empty list there (no flags, no shut-eye spans, no head actions) becomes type null, which the
next sample's strings cannot be cast to. Declared, every sample's JSON has one type per field. Videos and audio are
declared as bytes (decode them with PyAV, decord or torchcodec as you like): `datasets`' own Video/Audio types need
torchcodec even to store them. A JSON key the card does not declare is left out of the `datasets` view (the shard
keeps it).
"""
from __future__ import annotations

import yaml

from .pipeline import MEMBERS
from .schema import QUALITY_COLUMNS, QUALITY_TEXT_COLUMNS

FLOAT, INT, TEXT, FLAG = "float64", "int64", "string", "bool"


def _value(dtype: str) -> dict:
    return {"dtype": dtype}


def _list(inner: dict | str, depth: int = 1) -> dict:
    """A list (of lists ...) of `inner`: a dtype name, or a feature mapping."""
    node = inner
    for _ in range(depth):
        node = {"list": node}
    return node


def _struct(fields: dict[str, dict]) -> dict:
    return {"struct": [{"name": name, **feature} for name, feature in fields.items()]}


QUALITY = {**{c: _value(FLOAT) for c in QUALITY_COLUMNS}, **{c: _value(TEXT) for c in QUALITY_TEXT_COLUMNS},
           "silent": _value(FLAG), "av_mouth_motion": _value(FLOAT), "av_speech_share": _value(FLOAT),
           "gaze_filled_spans": _list(INT, 2)}
EXTRA = {"identity": _value(TEXT), "split": _value(TEXT), "source_offset": _value(FLOAT), "prompts": _list(TEXT),
         "prompt_source": _value(TEXT), "ground_truth_pose": _value(TEXT)}
META = {"key": _value(TEXT), "schema_version": _value(TEXT), "source": _value(TEXT), "video_id": _value(TEXT),
        "start": _value(FLOAT), "end": _value(FLOAT), "fps": _value(FLOAT), "frames": _value(INT),
        "audio_rate": _value(INT), "source_size": _list(INT), "source_fps": _value(FLOAT),
        "source_rotation": _value(INT), "crop_size": _value(INT), "crop_box_median": _list(FLOAT),
        "audio_source": _value(TEXT), "landmarks_backend": _value(TEXT), "flags": _list(TEXT),
        "quality": _struct(QUALITY), "extra": _struct(EXTRA)}
ACTION = {"kind": _value(TEXT), "start_s": _value(FLOAT), "end_s": _value(FLOAT), "strength": _value(FLOAT),
          "axis": _value(TEXT), "swings": _value(INT)}
TEXT_JSON = {"source": _value(TEXT), "prompts": _list(TEXT), "actions": {"list": _struct(ACTION)}}


def member_feature(name: str) -> dict:
    """The `datasets` feature of one member, from its spec in the schema (feature layers: float16[rows, D])."""
    if name == "meta.json":
        return _struct(META)
    if name == "text.json":
        return _struct(TEXT_JSON)
    spec = MEMBERS[name].dtype if name in MEMBERS else "float16[T,D]"
    if not name.endswith(".npy"):
        return _value("binary")             # video.mp4, audio.flac: the encoded bytes
    dtype, dims = spec.split("[", 1)
    return _list(dtype, dims.count(",") + 1)


def features(members: list[str]) -> list[dict]:
    return [{"name": "__key__", "dtype": TEXT}, {"name": "__url__", "dtype": TEXT},
            *({"name": name, **member_feature(name)} for name in sorted(members))]


def card(manifest: dict) -> str:
    """The README.md text for a build's manifest (its own shards; a derived manifest has no card)."""
    header = {"configs": [{"config_name": "default", "default": True,
                           "data_files": [{"split": "train", "path": "shards/*.tar"}]}],
              "dataset_info": {"config_name": "default", "features": features(list(manifest["members"]))},
              "tags": ["talking-face", "webdataset", "posetalk"]}
    counts = manifest.get("counts", {})
    rows = "\n".join(f"| `{name}` | {desc} |" for name, desc in sorted(manifest["members"].items()))
    return (f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n\n"
            f"# posetalk build ({manifest.get('source', '?')})\n\n"
            f"{counts.get('samples', '?')} face clips ({counts.get('hours', '?')} h) from "
            f"{counts.get('videos', '?')} videos, in {counts.get('shards', '?')} WebDataset shards under `shards/`. "
            "`manifest.json` records the pipeline, the versions and every shard's sha256; `samples.parquet` has one "
            "row per clip (quality figures, flags), `failures.parquet` every clip left out and why.\n\n"
            "```python\nimport datasets\nds = datasets.load_dataset(\"path/or/url/of/this/folder\", split=\"train\")"
            "\n```\n\nVideos and audio load as their encoded bytes; arrays as nested lists.\n\n"
            f"| member | what |\n|---|---|\n{rows}\n")
