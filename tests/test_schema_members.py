"""The schema is what the stages declare: the sample's members, what encode writes, what verify checks and the
manifest's per-member versions all come from `Stage.members` / `Stage.writes()`, so a new stage is one file plus
one line in pipeline.STAGES."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from posetalk_data.config import load_config
from posetalk_data.inspection import layers
from posetalk_data.pipeline import LAYER_VERSIONS, MEMBERS, STAGES, VideoProcessor
from posetalk_data.reading import read_samples
from posetalk_data.schema import ClipRecord, Member, VideoSpec
from posetalk_data.stages.base import ClipFailure, Stage
from posetalk_data.stages.encode import EncodeStage, encoded


class BlinkStage(Stage):
    """A stage a developer might add: one per-frame array."""
    name = "blink"
    members = (Member("blink.npy", "eyelid openness per frame", "float32[T,2]", versions=("blink_model",)),)


def stages_with(extra: type[Stage]) -> list[Stage]:
    """pipeline.build_stages with `extra` listed before encode: what one added line in STAGES gives."""
    cfg, stages = load_config(None, []), []
    for cls in (*STAGES[:-1], extra, STAGES[-1]):
        stages.append(cls.from_config(cfg, stages))
    return stages


def test_a_new_stage_is_encoded_as_it_declares():
    encode = stages_with(BlinkStage)[-1]
    assert isinstance(encode, EncodeStage)
    declared = [m.name for m in encode.earlier]
    assert "blink.npy" in declared and {"pose.npy", "video.mp4", "mel.npy", "minilm.npy"} <= set(declared)
    blink = encode.earlier[declared.index("blink.npy")]
    record = ClipRecord(spec=VideoSpec("folder", "v", "v.mp4"), workdir=Path("."))
    record.arrays["blink"] = np.ones((5, 2), np.float64)
    array = np.load(io.BytesIO(encoded(record, blink, frames=5)))
    assert array.dtype == np.float32 and array.shape == (5, 2)
    with pytest.raises(ClipFailure, match="blink has 5 rows for 6 video frames"):
        encoded(record, blink, frames=6)
    record.arrays["blink"][2, 1] = np.nan
    with pytest.raises(ClipFailure, match="non-finite"):
        encoded(record, blink, frames=5)


def test_schema_and_layer_versions_come_from_the_stages():
    declared = {m.name: m for cls in STAGES for m in cls.members}
    assert MEMBERS == declared and len(MEMBERS) == 7
    assert {name: m.per_frame for name, m in MEMBERS.items()} == {
        "video.mp4": False, "audio.flac": False, "pose.npy": True, "gaze.npy": True, "landmarks.npy": True,
        "text.json": False, "meta.json": False}
    assert LAYER_VERSIONS["pose.npy"] == ("face_mesh", "landmarks", "face_template")
    assert "text.json" not in LAYER_VERSIONS
    manifest = {"members": {"pose.npy": "p", "mel.npy": "m"},
                "versions": {"face_mesh": "1", "landmarks": "2", "face_template": "3", "mel.npy": "{}", "gaze": "4"}}
    assert layers(manifest) == {"pose.npy": {"description": "p", "versions": {"face_mesh": "1", "landmarks": "2",
                                                                             "face_template": "3"}},
                                "mel.npy": {"description": "m", "versions": {"mel.npy": "{}"}}}


def test_a_built_sample_holds_exactly_the_declared_members(grid_build):
    cfg = load_config(None, ["facetrack.crop_size=96"])
    declared = VideoProcessor(cfg).members()
    manifest = json.loads((grid_build / "manifest.json").read_text())
    assert manifest["members"] == declared
    for _, sample in read_samples(grid_build / "manifest.json"):
        assert set(sample) == set(declared)
