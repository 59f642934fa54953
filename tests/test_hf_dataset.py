"""A build is a Hugging Face dataset as it stands: its card (README.md) declares the configs and features, so
`datasets.load_dataset(OUT)` loads it whole (not only streaming), empty lists in the first samples included."""
from __future__ import annotations

import json

import pytest
import yaml

datasets = pytest.importorskip("datasets")


def card_header(out) -> dict:
    text = (out / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1])


def test_load_dataset_reads_a_build_with_its_card(grid_build, tmp_path):
    manifest = json.loads((grid_build / "manifest.json").read_text())
    ds = datasets.load_dataset(str(grid_build), split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == manifest["counts"]["samples"] == 2
    assert set(manifest["members"]) <= set(ds.column_names)
    metas = [row["meta.json"] for row in ds]
    # the case that broke the guessed schema: a list empty in one sample and filled in another
    spans = [m["quality"]["gaze_filled_spans"] for m in metas] + [m["flags"] for m in metas]
    assert any(s == [] for s in spans) and any(s for s in spans)
    assert [m["key"] for m in metas] == list(ds["__key__"])
    assert len(ds[0]["pose.npy"][0]) == 6 and ds[0]["video.mp4"][:8][4:8] == b"ftyp"


def test_webdataset_loader_with_the_cards_configs_and_features(grid_build, tmp_path):
    """load_args: the card read back, its data_files joined to the build, for the webdataset loader (what a build in
    a store needs, tests/test_object_store.py); the same rows downloaded and streamed."""
    from posetalk_data.dataset_card import load_args

    args = load_args(grid_build)
    assert args["data_files"] == {"train": [str(grid_build / "shards" / "*.tar")]} and args["storage_options"] == {}
    assert args["features"] == datasets.Features._from_yaml_list(card_header(grid_build)["dataset_info"]["features"])
    ds = datasets.load_dataset("webdataset", split="train", cache_dir=str(tmp_path), **args)
    assert ds.num_rows == 2 and ds.features == args["features"]
    streamed = list(datasets.load_dataset("webdataset", split="train", streaming=True, **args))
    assert [r["__key__"] for r in streamed] == ds["__key__"] and streamed[1]["meta.json"] == ds[1]["meta.json"]
