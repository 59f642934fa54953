"""posetalk_data.storage: the one layer for paths and URLs, on a local disk and on a real S3 server (moto)."""
from __future__ import annotations

import pytest

from posetalk_data import storage
from posetalk_data.config import ConfigError, load_config


@pytest.fixture(params=["disk", "s3"])
def base(request, tmp_path):
    if request.param == "disk":
        return tmp_path / "area"
    request.getfixturevalue("s3_server")
    fs, _ = storage.filesystem("s3://layer")
    if not fs.exists("layer"):
        fs.mkdir("layer")
    return f"s3://layer/{tmp_path.name}"


def test_write_read_list_find_remove(base):
    storage.makedirs(storage.join(base, "a"))
    storage.write_atomic(storage.join(base, "a", "x.json"), '{"n": 1}')
    storage.write_json(storage.join(base, "b.json"), {"n": 2})
    assert storage.read_json(storage.join(base, "a", "x.json")) == {"n": 1}
    assert storage.is_file(storage.join(base, "b.json")) and storage.is_dir(storage.join(base, "a"))
    assert storage.listdir(base) == ["a", "b.json"]
    assert storage.find(base) == {"a/x.json": 8, "b.json": 11}
    assert storage.relative_to(storage.join(base, "a", "x.json"), base) == "a/x.json"
    assert storage.name(storage.join(base, "a", "x.json")) == "x.json"
    assert storage.parent(storage.join(base, "a", "x.json")) == storage.join(base, "a")
    assert not list(storage.find(base).keys() & {"a/x.json.tmp", "b.json.tmp"})     # nothing half-written left
    storage.remove(base, recursive=True)
    assert not storage.exists(storage.join(base, "b.json"))


def test_a_url_stays_a_url():
    """A Path would turn s3://b/x into s3:/b/x: URLs are kept as text, file:// is a plain path."""
    assert storage.location("s3://b/builds/x/") == "s3://b/builds/x"
    assert storage.join("s3://b/builds", "shards", "a.tar") == "s3://b/builds/shards/a.tar"
    assert str(storage.location("file:///tmp/x")) == "/tmp/x" and not storage.is_url("file:///tmp/x")


def test_endpoint_from_the_config_storage_section(s3_server, monkeypatch):
    """The store reached through the YAML's storage section alone (no AWS_ENDPOINT_URL)."""
    storage.write_json("s3://layer/cfg/x.json", {"ok": True})
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    cfg = load_config(None, [f"storage.options.s3.endpoint_url={s3_server['AWS_ENDPOINT_URL']}"])
    try:
        storage.configure(cfg.storage.options)
        assert storage.read_json("s3://layer/cfg/x.json") == {"ok": True}
    finally:
        storage.configure({})


def test_credentials_in_the_config_are_refused():
    with pytest.raises(ConfigError, match="credentials are not read from the config"):
        load_config(None, ["storage.options.s3.secret=abc"])


def test_older_configs_samples_per_shard_reads_as_videos_per_shard():
    assert load_config(None, ["write.samples_per_shard=3"]).write.videos_per_shard == 3
