"""Manifest tools on a tiny real build (two GRID clips, one sample per shard): verify finds damage, unsafe paths
are refused, a moved build verifies, filter/split/merge write manifests that verify, rebuild reproduces the samples."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posetalk_data.inspection import compare, stats
from posetalk_data.manifest import filter_manifest, merge_manifests, split_manifest
from posetalk_data.reading import FORMAT, ManifestError, UnsafeShardError, load_manifest, safe_samples
from posetalk_data.rebuild import rebuild
from posetalk_data.verify import verify
from posetalk_data.shards import SAMPLES_SCHEMA
from posetalk_data.splits import split_of

GRID = ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg")


@pytest.fixture(scope="module")
def tiny(samples, tmp_path_factory):
    """(input folder, build folder) of the two GRID clips, built once in-process."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    root = tmp_path_factory.mktemp("manifest_in")
    for name in GRID:
        (root / name).symlink_to(samples / "videos" / name)
    out = tmp_path_factory.mktemp("manifest_build") / "build"
    cfg = load_config(None, ["facetrack.crop_size=128", "write.videos_per_shard=1"])
    build(folder_specs(root), out, cfg, source="folder", root=root, workers=0)
    return root, out


def copy_build(out: Path, dst: Path) -> Path:
    shutil.copytree(out, dst, ignore=shutil.ignore_patterns(".staging"))
    return dst


def keys_by_video(out: Path) -> dict[str, str]:
    return {r["video_id"]: r["key"] for r in pq.read_table(out / "samples.parquet").to_pylist()}


def found(problems) -> set[tuple[str, str]]:
    return {(p.shard, p.what) for p in problems}


SHARD0, SHARD1 = "shards/posetalk-000000.tar", "shards/posetalk-000001.tar"


def test_intact_build_verifies_and_reports_stats(tiny):
    _, out = tiny
    assert verify(out / "manifest.json") == []
    report = stats(out / "manifest.json")
    assert report["counts"] == {"samples": 2, "shards": 2, "videos": 2, "hours": 0.0017, "failures": 0}
    assert report["columns"]["frames"]["median"] == 75
    assert "face_mesh" in report["layers"]["landmarks.npy"]["versions"]


def test_verify_names_a_flipped_byte_a_missing_and_a_truncated_shard(tiny, tmp_path):
    _, out = tiny
    damaged = copy_build(out, tmp_path / "damaged")
    with tarfile.open(damaged / SHARD0) as tar:
        pose = next(m for m in tar.getmembers() if m.name.endswith(".pose.npy"))
    data = bytearray((damaged / SHARD0).read_bytes())
    data[pose.offset_data + pose.size - 1] ^= 0xFF            # the last byte of the pose array
    (damaged / SHARD0).write_bytes(bytes(data))
    assert compare(out / "manifest.json", damaged / "manifest.json")["differing"] == \
        {keys_by_video(out)["grid_bbaf2n.mpg"]: ["pose.npy"]}
    (damaged / SHARD1).unlink()
    problems = verify(damaged / "manifest.json")
    assert found(problems) == {(SHARD0, "checksum"), (SHARD1, "missing")}, problems

    truncated = copy_build(out, tmp_path / "truncated")
    data = (truncated / SHARD1).read_bytes()
    (truncated / SHARD1).write_bytes(data[: len(data) // 2])
    problems = verify(truncated / "manifest.json")
    assert {(SHARD1, "size"), (SHARD1, "checksum"), (SHARD1, "unreadable")} <= found(problems), problems
    assert {p.shard for p in problems} == {SHARD1}
    assert any("truncated" in p.detail for p in problems)


def tar_with(path: Path, info: tarfile.TarInfo, data: bytes = b"{}") -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info.size = len(data) if info.isreg() else 0
        tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


@pytest.mark.parametrize("name", ["../../x.meta.json", "/abs/x.meta.json", "a/../../x.meta.json"])
def test_member_names_escaping_the_folder_are_refused(tmp_path, name):
    shard = tar_with(tmp_path / "evil.tar", tarfile.TarInfo(name))
    with tarfile.open(shard) as tar:
        assert tar.getnames() == [name]      # the name really is in the tar as written
    with pytest.raises(UnsafeShardError, match="escapes"):
        list(safe_samples(shard))


def test_links_in_a_shard_are_refused_and_verify_reports_them(tmp_path):
    link = tarfile.TarInfo("k.meta.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    (tmp_path / "shards").mkdir()
    shard = tar_with(tmp_path / "shards" / "evil.tar", link)
    with pytest.raises(UnsafeShardError, match="not a regular file"):
        list(safe_samples(shard))
    manifest = {"format": FORMAT, "schema_version": "1", "shards": [{"path": "shards/evil.tar", "samples": 1}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    assert ("shards/evil.tar", "unsafe") in found(verify(tmp_path / "m.json"))


@pytest.mark.parametrize("field, value", [("shard", "../elsewhere.tar"), ("shard", "/data/shards/x.tar"),
                                          ("shard", "shards/../../x.tar"), ("table", "../samples.parquet")])
def test_manifest_paths_escaping_the_folder_are_refused(tiny, tmp_path, field, value):
    manifest = json.loads((tiny[1] / "manifest.json").read_text())
    if field == "shard":
        manifest["shards"][0]["path"] = value
    else:
        manifest["tables"]["samples"] = value
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="escapes"):
        load_manifest(tmp_path / "m.json")


def test_only_a_json_posetalk_manifest_is_loaded(tmp_path):
    (tmp_path / "pickle.json").write_bytes(b"\x80\x04\x95\x00")
    (tmp_path / "other.json").write_text('{"shards": []}')
    for name in ("pickle.json", "other.json"):
        with pytest.raises(ManifestError):
            load_manifest(tmp_path / name)


def test_a_moved_build_still_verifies(tiny, tmp_path):
    _, out = tiny
    moved = tmp_path / "elsewhere" / "dataset"
    moved.parent.mkdir()
    shutil.move(copy_build(out, tmp_path / "copy"), moved)
    assert verify(moved / "manifest.json") == []
    assert str(out) not in (moved / "manifest.json").read_text()


def test_filter_keeps_the_matching_keys_and_verifies(tiny, tmp_path):
    _, out = tiny
    keys = keys_by_video(out)
    inside = copy_build(out, tmp_path / "build")
    for target in (inside / "bbaf.json", tmp_path / "other" / "bbaf.json"):   # shards in place / linked in
        result = filter_manifest(inside / "manifest.json", "video_id == 'grid_bbaf2n.mpg' and frames >= 75", target)
        assert [k for s in result["shards"] for k in s["keys"]] == [keys["grid_bbaf2n.mpg"]]
        assert result["manifest_version"] == 2 and verify(target) == []
        assert stats(target)["counts"]["samples"] == 1
    both = filter_manifest(inside / "manifest.json", "'small_face' not in flags or abs(yaw_range) < 90",
                           tmp_path / "both.json")
    assert both["counts"]["samples"] == 2
    for unsafe in ("__import__('os').system('true')", "key.upper() == 'A'", "nope > 1", "flags[0] == 'x'"):
        with pytest.raises(ManifestError):
            filter_manifest(inside / "manifest.json", unsafe, tmp_path / "bad.json")


def test_split_of_the_build_verifies_and_is_stable(tiny, tmp_path):
    _, out = tiny
    halves = [("train", 0.5), ("val", 0.5), ("test", 0.0)]
    first = split_manifest(out / "manifest.json", tmp_path / "a", seed=3, fractions=(0.5, 0.5, 0.0))
    again = split_manifest(out / "manifest.json", tmp_path / "b", seed=3, fractions=(0.5, 0.5, 0.0))
    assert first == again and first["test"] == []
    # a folder build names no identity: each video is its own, split by the one rule
    assert {name: sorted(keys) for name, keys in first.items()} == {
        name: sorted(k for vid, k in keys_by_video(out).items() if split_of(vid, 3, halves) == name)
        for name, _ in halves}
    for name in first:
        assert verify(tmp_path / "a" / f"{name}.json") == []


def synthetic_manifest(folder: Path, speakers: int = 40, clips: int = 3, *, identity: bool = False) -> Path:
    """A manifest and samples table with several clips per speaker (split never opens the shard). identity: the
    rows carry the speaker as their identity and its split as a dataset adapter writes them."""
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "posetalk-000000.tar").write_bytes(b"")
    rows = [{"key": f"folder_s{s}_c{c}", "shard": "shards/posetalk-000000.tar", "source": "folder",
             "video_id": f"s{s}/clip{c}", "source_path": f"s{s}/clip{c}.mp4", "start": 0.0, "end": 3.0,
             "frames": 75, "duration": 3.0, "flags": [], "silent": False,
             **({"identity": f"s{s}", "split": split_of(f"s{s}")} if identity else {})}
            for s in range(speakers) for c in range(clips)]
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), folder / "samples.parquet")
    manifest = {"format": FORMAT, "schema_version": "1", "tables": {"samples": "samples.parquet"},
                "shards": [{"path": "shards/posetalk-000000.tar", "sha256": "0" * 64, "samples": len(rows)}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def test_split_is_identity_disjoint_and_seeded(tmp_path):
    path = synthetic_manifest(tmp_path / "syn")
    speaker = r"^(s\d+)/"
    runs = [split_manifest(path, tmp_path / f"run{i}", seed=seed, identity=speaker)
            for i, seed in enumerate((7, 7, 8))]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    who = {name: {k.split("_")[1] for k in keys} for name, keys in runs[0].items()}
    assert not (who["train"] & who["val"] or who["train"] & who["test"] or who["val"] & who["test"])
    assert sorted(k for keys in runs[0].values() for k in keys) == sorted(f"folder_s{s}_c{c}" for s in range(40)
                                                                          for c in range(3))
    assert who == {name: {f"s{s}" for s in range(40) if split_of(f"s{s}", 7) == name} for name in who}
    assert 0.7 <= len(runs[0]["train"]) / 120 <= 0.9 and runs[0]["val"] and runs[0]["test"]


def test_split_command_defaults_give_the_builds_own_split_column(tmp_path):
    """`manifest split` with its defaults puts every sample where the dataset adapter's split_of did."""
    from typer.testing import CliRunner

    from posetalk_data.cli import app

    path = synthetic_manifest(tmp_path / "syn", speakers=60, identity=True)
    result = CliRunner().invoke(app, ["manifest", "split", str(path), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "syn" / "samples.parquet").to_pylist()
    for name in ("train", "val", "test"):
        written = pq.read_table(tmp_path / "s" / f"{name}.samples.parquet").to_pylist()
        assert written and {r["split"] for r in written} == {name}
        assert f"{name}: {len(written)} samples" in result.output
    assert sum(len(pq.read_table(tmp_path / "s" / f"{n}.samples.parquet")) for n in ("train", "val", "test")) \
        == len(rows)


def test_adding_identities_moves_none(tmp_path):
    """A dataset that grows: the 40 speakers of the first split keep their splits when 25 more join."""
    def who(manifest: Path, out: Path) -> dict[str, str]:
        parts = split_manifest(manifest, out, seed=5, fractions=(0.6, 0.2, 0.2), identity=r"^(s\d+)/")
        return {k.split("_")[1]: name for name, keys in parts.items() for k in keys}

    small = who(synthetic_manifest(tmp_path / "small", speakers=40), tmp_path / "a")
    grown = who(synthetic_manifest(tmp_path / "grown", speakers=65, clips=4), tmp_path / "b")
    assert len(small) == 40 and len(grown) == 65
    assert {s: grown[s] for s in small} == small
    assert set(small.values()) == set(grown.values()) == {"train", "val", "test"}


def test_merge_refuses_duplicates_and_version_mismatch_unless_asked(tiny, tmp_path):
    _, out = tiny
    keys = keys_by_video(out)
    a, b = copy_build(out, tmp_path / "a"), copy_build(out, tmp_path / "b")
    with pytest.raises(ManifestError, match="duplicate"):
        merge_manifests([a / "manifest.json", b / "manifest.json"], tmp_path / "merged.json")
    merged = merge_manifests([a / "manifest.json", b / "manifest.json"], tmp_path / "merged.json",
                             on_duplicate="first")
    assert merged["counts"]["samples"] == 2 and merged["derived"]["duplicates_dropped"] == 2
    assert {s["path"] for s in merged["shards"]} == {f"a/{SHARD0}", f"a/{SHARD1}"}
    assert verify(tmp_path / "merged.json") == []

    filter_manifest(a / "manifest.json", "video_id == 'grid_bbaf2n.mpg'", a / "one.json")
    filter_manifest(b / "manifest.json", "video_id == 'grid_lbbc2a.mpg'", b / "two.json")
    halves = merge_manifests([a / "one.json", b / "two.json"], tmp_path / "m" / "halves.json")   # shards linked in
    assert sorted(k for s in halves["shards"] for k in s["keys"]) == sorted(keys.values())
    assert verify(tmp_path / "m" / "halves.json") == []

    manifest = json.loads((b / "manifest.json").read_text())
    manifest["versions"]["face_mesh"] = "another face mesh 9.9"
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="face_mesh"):
        merge_manifests([a / "manifest.json", b / "manifest.json"], tmp_path / "v.json", on_duplicate="first")
    allowed = merge_manifests([a / "manifest.json", b / "manifest.json"], tmp_path / "v.json", on_duplicate="first",
                              allow_version_mismatch=True)
    assert len(allowed["versions_by_input"]) == 2


def test_rebuild_gives_the_same_keys_and_samples(tiny, tmp_path):
    root, out = tiny
    report = rebuild(out / "manifest.json", tmp_path / "again", input_root=root, workers=0)
    assert report["only_in_a"] == report["only_in_b"] == [] and report["differing"] == {}, report
    assert report["same"] == 2 and report["sources_changed"] == []


def test_manifest_commands_exit_codes(tiny, tmp_path):
    """The CLI wrappers: verify passes then names a damaged shard, filter writes, a bad expression is exit 2."""
    from typer.testing import CliRunner

    from posetalk_data.cli import app

    _, out = tiny
    run = lambda *args: CliRunner().invoke(app, ["manifest", *map(str, args)])
    assert run("verify", out).exit_code == 0
    damaged = copy_build(out, tmp_path / "damaged")
    (damaged / SHARD1).write_bytes((damaged / SHARD1).read_bytes()[:1000])
    result = run("verify", damaged)
    assert result.exit_code == 1 and "posetalk-000001.tar" in result.output
    assert run("filter", out, "--where", "video_id == 'grid_bbaf2n.mpg'", "--out", tmp_path / "f.json").exit_code == 0
    assert run("verify", tmp_path / "f.json").exit_code == 0
    bad = run("filter", out, "--where", "__import__('os')", "--out", tmp_path / "g.json")
    assert bad.exit_code == 2 and not (tmp_path / "g.json").exists()
    assert run("inspect", out, "--json").exit_code == 0
