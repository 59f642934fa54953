"""OUT/README.md: the dataset card that makes a build a Hugging Face dataset as it stands.

`datasets.load_dataset(OUT)` reads the card's `configs` (which files: shards/*.tar, WebDataset) and `dataset_info`
(the features). Declaring the features matters: without them `datasets` guesses each column's type from the first
few samples, and an empty list there (no flags, no shut-eye spans, no head actions) becomes type null, which the
next sample's strings cannot be cast to. Declared, every sample's JSON has one type per field. Videos and audio are
declared as bytes (decode them with PyAV, decord or torchcodec as you like): `datasets`' own Video/Audio types need
torchcodec even to store them. A JSON key the card does not declare is left out of the `datasets` view (the shard
keeps it).

`load_args(OUT)` reads the card back from wherever the build is: `datasets.load_dataset(path)` takes a local folder
or a Hub name only, so from a store the card's configs and features go to the webdataset loader by hand.
"""
from __future__ import annotations

import yaml

from . import storage
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
            "```python\nimport datasets\nds = datasets.load_dataset(\"path/of/this/folder\", split=\"train\")\n"
            "# in a store (load_dataset(path) takes a local folder or a Hub name only); streaming=True works too\n"
            "from posetalk_data.dataset_card import load_args\n"
            "ds = datasets.load_dataset(\"webdataset\", split=\"train\", **load_args(\"s3://bucket/this/folder\"))"
            "\n```\n\nVideos and audio load as their encoded bytes; arrays as nested lists.\n\n"
            f"| member | what |\n|---|---|\n{rows}\n")


def load_args(out, storage_options: dict | None = None) -> dict:
    """Keyword arguments for `datasets.load_dataset("webdataset", split=..., **load_args(OUT))`, OUT a folder or a
    URL: the card's configs as `data_files` (its paths joined to OUT), its features, and `storage_options` (fsspec's,
    as datasets takes them) that also let `streaming=True` read s3:// (see `_streamable`)."""
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    header = DatasetCard(storage.read_text(storage.join(out, "README.md"))).data
    config = next((c for c in header["configs"] if c.get("default")), header["configs"][0])
    data_files: dict[str, list[str]] = {}
    for entry in config["data_files"]:
        data_files.setdefault(entry["split"], []).append(str(storage.join(out, entry["path"])))
    features = DatasetInfosDict.from_dataset_card_data(header)[config["config_name"]].features
    options = dict(storage_options or {})
    return {"data_files": data_files, "features": features,
            "storage_options": _streamable(options) if str(out).startswith("s3://") else options}


def _streamable(options: dict) -> dict:
    """datasets' streaming opens each tar with `block_size=0` as a filesystem option (datasets/utils/file_utils.py,
    ArchiveIterable._iter_from_urlpath, since 2.17); s3fs hands an option it does not know to the AioSession it
    makes, which refuses it (TypeError). An s3fs given a session makes none, so one is given; `profile`, the
    option meant for that session, goes into it."""
    import fsspec

    protocols = set(fsspec.available_protocols())
    s3 = dict(options["s3"]) if "s3" in options else {k: v for k, v in options.items() if k not in protocols}
    if "session" not in s3:
        s3["session"] = _fresh_session(s3.pop("profile", None))
    return {**{k: v for k, v in options.items() if k in protocols}, "s3": s3}


def _fresh_session(profile: str | None = None):
    from aiobotocore.session import AioSession

    class FreshSession(AioSession):
        def __reduce__(self):           # an AioSession holds os.environ's encoders, which do not pickle
            return _fresh_session, (profile,)

    return FreshSession(profile=profile)
