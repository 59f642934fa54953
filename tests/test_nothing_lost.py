"""Hostile but legitimate inputs (issue 10): nothing lost, nothing deleted that we did not write, one-line errors.

Each test reproduces one reported defect on a tiny real build of the two 3 s GRID clips."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posetalk_data.cli import app
from posetalk_data.verify import verify

TINY = ["--workers", "0", "--set", "facetrack.crop_size=64", "--set", "write.videos_per_shard=1"]


def said(result) -> str:
    return " ".join(result.output.split())


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result) -> bool:
    """Exit 2 with an 'error:' message and no traceback (what every command promises for a user mistake)."""
    return result.exit_code == 2 and "error" in result.output.lower() and "Traceback" not in result.output \
        and (result.exception is None or isinstance(result.exception, SystemExit))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def grid(samples, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lost_in")
    for name in ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg"):
        (root / name).symlink_to(samples / "videos" / name)
    return root


@pytest.fixture(scope="module")
def built(grid, tmp_path_factory) -> Path:
    """A finished build of the two clips, one sample per shard; read-only (copy it to change it)."""
    out = tmp_path_factory.mktemp("lost_build") / "o"
    result = run("build", "--src", "folder", "--input", grid, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    return out


def copy(out: Path, dst: Path) -> Path:
    return Path(shutil.copytree(out, dst, symlinks=True))


# 1 ---------------------------------------------------------------------------------------------------------------
def test_videos_with_the_same_stem_keep_their_own_keys(samples, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.mp4").symlink_to(samples / "videos" / "grid_bbaf2n.mpg")
    (d / "x.mov").symlink_to(samples / "videos" / "grid_lbbc2a.mpg")
    result = run("build", "--src", "folder", "--input", d, "--out", tmp_path / "o", *TINY)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "o" / "samples.parquet").to_pylist()
    assert sorted(r["video_id"] for r in rows) == ["x.mov", "x.mp4"] and len({r["key"] for r in rows}) == 2
    assert verify(tmp_path / "o" / "manifest.json") == []


# 2 ---------------------------------------------------------------------------------------------------------------
def test_compare_and_rebuild_commands_run(built, grid, tmp_path):
    same = run("manifest", "compare", built, built)
    assert same.exit_code == 0 and "same: 2" in said(same), same.output
    damaged = copy(built, tmp_path / "damaged")
    shard = sorted((damaged / "shards").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF          # inside the first member's data
    shard.write_bytes(bytes(data))
    differ = run("manifest", "compare", built, damaged)
    assert differ.exit_code == 1 and "differing: 1" in said(differ), differ.output
    again = run("manifest", "rebuild", built, "--input", grid, "--out", tmp_path / "again", "--workers", "0")
    assert again.exit_code == 0 and "same: 2" in said(again), again.output


# 3 ---------------------------------------------------------------------------------------------------------------
def test_extend_refuses_a_corrupt_shard_and_rewrites_nothing(built, tmp_path):
    o = copy(built, tmp_path / "o")
    shard = sorted((o / "shards").glob("*.tar"))[1]
    data = bytearray(shard.read_bytes())
    data[3000] ^= 0xFF
    shard.write_bytes(bytes(data))
    before = {p.name: digest(p) for p in (o / "shards").glob("*.tar")}
    result = run("extend", "--manifest", o / "manifest.json", "--features", "minilm")
    assert one_line_error(result) and shard.name in said(result), result.output
    assert {p.name: digest(p) for p in (o / "shards").glob("*.tar")} == before
    assert any(p.what == "checksum" for p in verify(o / "manifest.json"))


# 4, 8 ------------------------------------------------------------------------------------------------------------
def test_a_build_never_removes_files_it_did_not_write(grid, built, tmp_path):
    u = tmp_path / "u"
    (u / "shards").mkdir(parents=True)
    (u / "shards" / "mine.tar").write_text("x\n")
    result = run("build", "--src", "folder", "--input", grid, "--out", u, *TINY)
    assert one_line_error(result) and "not a posetalk build" in said(result), result.output
    assert (u / "shards" / "mine.tar").read_text() == "x\n"
    # a file dropped into an earlier build's folder survives a rerun of that build
    o = copy(built, tmp_path / "o")
    (o / "shards" / "mine.tar").write_text("x\n")
    assert run("build", "--src", "folder", "--input", grid, "--out", o, *TINY).exit_code == 0
    assert (o / "shards" / "mine.tar").read_text() == "x\n" and verify(o / "manifest.json") == []


def test_out_that_is_a_file_is_a_one_line_error(grid, tmp_path):
    (tmp_path / "f").write_text("mine")
    result = run("build", "--src", "folder", "--input", grid, "--out", tmp_path / "f", *TINY)
    assert one_line_error(result) and "is a file" in said(result) and (tmp_path / "f").read_text() == "mine"


def test_out_inside_the_input_is_not_read_as_input(samples, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "clip.mpg").symlink_to(samples / "videos" / "grid_bbaf2n.mpg")
    for _ in range(2):      # the second run sees the first one's staged crops under d/out
        result = run("build", "--src", "folder", "--input", d, "--out", d / "out", *TINY)
        assert result.exit_code == 0, result.output
    rows = pq.read_table(d / "out" / "samples.parquet").to_pylist()
    assert [r["video_id"] for r in rows] == ["clip.mpg"]


# 5 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["samples.parquet", "manifest.json", "failures.parquet", "shards",
                                    "report.html", "samples.json"])
def test_filter_and_merge_never_overwrite_the_builds_files(built, tmp_path, target):
    o = copy(built, tmp_path / "o")
    if target == "samples.json":       # its table would be samples.samples.parquet: harmless, allowed
        assert run("manifest", "filter", o, "--where", "duration > 0", "--out", o / target).exit_code == 0
        assert verify(o / target) == [] and verify(o / "manifest.json") == []
        return
    before = {p: digest(p) for p in o.rglob("*") if p.is_file()}
    for args in (["filter", o, "--where", "duration > 0"], ["merge", o, o]):
        result = run("manifest", *args, "--out", o / target)
        assert one_line_error(result), result.output
    assert {p: digest(p) for p in o.rglob("*") if p.is_file()} == before


# 7 ---------------------------------------------------------------------------------------------------------------
def test_report_opens_only_the_shards_the_manifest_lists(built, tmp_path, monkeypatch):
    import posetalk_data.report as report

    o = copy(built, tmp_path / "o")
    outside = copy(built, tmp_path / "elsewhere")
    table = pq.read_table(o / "samples.parquet").to_pylist()
    table[0]["shard"] = str(outside / table[0]["shard"])     # an absolute path written into the table
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(o / "samples.parquet")), o / "samples.parquet")
    opened = []
    real = report.safe_samples
    monkeypatch.setattr(report, "safe_samples", lambda tar, **kw: (opened.append(Path(tar)), real(tar, **kw))[1])
    assert run("report", "--manifest", o / "manifest.json").exit_code == 0
    assert opened and all(o in p.parents for p in opened), opened
    assert {p.what for p in verify(o / "manifest.json")} >= {"table"}


def test_verify_checks_the_samples_table(built, tmp_path):
    o = copy(built, tmp_path / "o")
    schema = pq.read_schema(o / "samples.parquet")
    pq.write_table(pa.Table.from_pylist([], schema=schema), o / "samples.parquet")
    problems = verify(o / "manifest.json")
    assert {p.what for p in problems} == {"table"} and len(problems) >= 3   # 2 samples without rows + the count
    result = run("manifest", "verify", o)
    assert result.exit_code == 1 and "table" in result.output


def test_report_on_an_unsafe_manifest_is_a_one_line_error(built, tmp_path):
    o = copy(built, tmp_path / "o")
    manifest = json.loads((o / "manifest.json").read_text())
    manifest["shards"][0]["path"] = "../../etc/passwd"
    (o / "manifest.json").write_text(json.dumps(manifest))
    result = run("report", "--manifest", o / "manifest.json")
    assert one_line_error(result) and "escapes" in said(result), result.output


# 9 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("where, words", [("'a' * 100000 * 100000", "limit"),
                                          ("duration > 'x'", "could not be evaluated on any of the 2 rows")])
def test_where_that_cannot_run_is_refused(built, tmp_path, where, words):
    result = run("manifest", "filter", built, "--where", where, "--out", tmp_path / "f.json")
    assert one_line_error(result) and words in said(result) and not (tmp_path / "f.json").exists(), result.output


# 10, 11 ----------------------------------------------------------------------------------------------------------
def test_truncated_video_says_it_is_truncated(samples, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    subprocess.run([*ffmpeg, "-i", str(samples / "videos" / "liveportrait_d11.mp4"), "-c", "copy", "-movflags",
                    "+faststart", str(tmp_path / "whole.mp4")], check=True)
    data = (tmp_path / "whole.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 3])       # index first: the first 3 s still decode
    (d / "stub.mp4").write_bytes(data[: len(data) // 14])     # less than a second decodes
    result = run("build", "--src", "folder", "--input", d, "--out", tmp_path / "o", *TINY)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "o" / "samples.parquet").to_pylist()
    failures = pq.read_table(tmp_path / "o" / "failures.parquet").to_pylist()
    assert [r["video_id"] for r in rows] == ["cut.mp4"] and "truncated" in rows[0]["flags"]
    dropped = [f for f in failures if f["kind"] != "span"]
    assert [f["video_id"] for f in dropped] == ["stub.mp4"] and "truncated" in dropped[0]["reason"]
    # what cut.mp4's header promised but could not be decoded is listed, as time no clip holds
    (lost,) = [f for f in failures if f["kind"] == "span"]
    assert lost["video_id"] == "cut.mp4" and lost["reason"].startswith("not decodable")
    assert lost["start"] == pytest.approx(rows[0]["end"]) and lost["end"] == pytest.approx(9.0, abs=0.05)


def test_set_profile_is_the_profile(tmp_path):
    from posetalk_data.config import load_config

    cfg = load_config(None, ["profile=paper"])
    assert (cfg.profile, cfg.speech.backend, cfg.text.encoder) == ("paper", "hubert", "clip")
    assert load_config(None, ["profile=paper", "speech.backend=mel"]).profile == "custom"
    assert load_config(None, [], "paper").model_copy().profile == "paper"


def test_empty_folder_hint_names_a_command_that_works(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("build", "--src", "folder", "--input", tmp_path / "empty", "--out", tmp_path / "o")
    assert one_line_error(result) and "sources inspect" not in said(result), result.output


def test_split_command_writes_verifiable_manifests(built, tmp_path):
    result = run("manifest", "split", built, "--seed", "1", "--fractions", "0.5,0.5,0", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert all(verify(tmp_path / "s" / f"{name}.json") == [] for name in ("train", "val", "test"))
    bad = run("manifest", "split", built, "--fractions", "0.8,ten", "--out", tmp_path / "t")
    assert one_line_error(bad) and "fractions" in said(bad), bad.output


def test_merge_command_writes_a_verifiable_manifest(built, tmp_path):
    refused = run("manifest", "merge", built, built, "--out", tmp_path / "m.json")
    assert refused.exit_code == 2 and "duplicate" in said(refused)
    merged = run("manifest", "merge", built, built, "--out", tmp_path / "m.json", "--on-duplicate", "first")
    assert merged.exit_code == 0 and "2 samples" in said(merged), merged.output
    assert verify(tmp_path / "m.json") == []
