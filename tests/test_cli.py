"""The CLI: exit codes, --strict, clear errors before any work."""
import json

import pytest
from typer.testing import CliRunner

from posetalk_data.cli import app

runner = CliRunner()


def said(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_strict_turns_a_dropped_clip_into_failure(samples, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "grid.mpg").symlink_to(samples / "videos" / "grid_bbaf2n.mpg")
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    args = ["build", "--src", "folder", "--input", str(root), "--workers", "0", "--set", "facetrack.crop_size=128"]
    lenient = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert lenient.exit_code == 0, lenient.output
    assert "samples kept" in said(lenient) and "unreadable video" in said(lenient)
    strict = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--strict"])
    assert strict.exit_code == 1 and "1 clip(s) dropped" in said(strict)


def test_missing_input_folder_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["build", "--src", "folder", "--input", str(tmp_path / "nope"), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in said(result)


def test_bad_override_names_the_key(tmp_path):
    result = runner.invoke(app, ["build", "--src", "folder", "--input", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--set", "facetrack.crop_sise=3"])
    assert result.exit_code == 2 and "facetrack.crop_sise" in said(result)


def test_unknown_source_lists_the_choices(tmp_path):
    result = runner.invoke(app, ["build", "--src", "youtube", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "folder" in said(result) and "demo" in said(result)


def test_help_explains_the_build():
    result = runner.invoke(app, ["build", "--help"])
    assert result.exit_code == 0 and "--ray-address" in said(result) and "--strict" in said(result)


def test_models_pull_offline_says_it_needs_internet():
    # HF_HUB_OFFLINE=1 in tests; --only keeps the weight files (tests/test_weight_pull.py) off the network
    result = runner.invoke(app, ["models", "pull", "--profile", "paper", "--only", "hubert,clip"])
    assert result.exit_code == 2 and "could not download facebook/hubert-base-ls960" in said(result)
    assert "could not download timm/vit_base_patch32_clip_224.openai" in said(result)
    assert "could not fetch hubert, clip" in said(result)


def test_version_lists_what_a_build_records():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and "posetalk:" in result.output and "ffmpeg:" in result.output


def test_sources_inspect_on_real_metadata():
    from conftest import REPO

    root = REPO.parent / "shared" / "metadata" / "hdtf"
    if not root.is_dir():
        pytest.skip(f"real dataset metadata not found at {root}")
    result = runner.invoke(app, ["sources", "inspect", "--src", "hdtf", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["clips_annotated"] == 436
    refused = runner.invoke(app, ["sources", "inspect", "--src", "folder", "--root", str(root)])
    assert refused.exit_code == 2 and "hdtf" in said(refused)


LATE_FAILING_LISTING = r"""
import sys, time
import ray
import posetalk_data.sources
from typer.testing import CliRunner
from posetalk_data.cli import app

def listing_that_fails_late(*args, **kwargs):
    deadline = time.monotonic() + 120
    while not ray.is_initialized() and time.monotonic() < deadline:    # Ray came up beside it
        time.sleep(0.05)
    raise ValueError(f"found something wrong late (Ray up: {ray.is_initialized()})")

posetalk_data.sources.source_plan = listing_that_fails_late
result = CliRunner().invoke(app, sys.argv[1:])
print(result.exit_code, " ".join(result.output.split()), "| Ray up after:", ray.is_initialized())
"""


def test_a_listing_that_fails_while_ray_starts_ends_that_ray(tmp_path):
    """Ray starts beside a slow source listing; when the listing then fails (a user's mistake found late), the
    command says so in one line and ends the Ray it started (none is left running in its process). In a process of
    its own: this session's Ray would otherwise be the one found up."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = ["build", "--src", "folder", "--input", str(tmp_path), "--out", str(tmp_path / "o")]
    run = subprocess.run([sys.executable, "-c", LATE_FAILING_LISTING, *args], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert run.returncode == 0, run.stderr[-2000:]
    said_ = run.stdout.strip().splitlines()[-1]
    assert said_.startswith("2 ") and "found something wrong late (Ray up: True)" in said_, said_
    assert said_.endswith("| Ray up after: False"), said_
