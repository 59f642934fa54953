"""`posetalk-data models pull / list` for the weight files, against a local HTTP server standing in for the internet
(small generated files served under the registry's file names, a registry holding their digests)."""
from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from posetalk_data import weights
from posetalk_data.cli import app
from posetalk_data.weight_pull import MIRROR_ENV

runner = CliRunner()


def said(result) -> str:
    return " ".join(result.output.split())


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    files = {}
    for name, entry in weights.WEIGHT_FILES.items():
        data = f"{name} weights\n".encode() * 500
        digest = hashlib.sha256(data).hexdigest()
        if name == "vgg19":      # checked by the prefix in its name only, as torchvision's files are
            entry = replace(entry, filename=f"vgg19-{digest[:8]}.pth", sha256=None)
        else:                    # the real file name (so the real destination), this file's full sha256
            entry = replace(entry, sha256=digest)
        (served / entry.filename).write_bytes(data)
        files[name] = entry
    monkeypatch.setattr(weights, "WEIGHT_FILES", files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    threading.Thread(target=partial(server.serve_forever, poll_interval=0.05), daemon=True).start()
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{server.server_port}")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield SimpleNamespace(files=files, served=served, hub=tmp_path / "torch" / "hub" / "checkpoints")
    server.shutdown()
    server.server_close()


def pull(*args: str):
    return runner.invoke(app, ["models", "pull", "--profile", "offline", *args])


def test_one_pull_places_every_file_where_the_code_looks_and_list_shows_it(mirror):
    from posetalk_data.config import LandmarksConfig
    from posetalk_data.stages.landmarks import LandmarksStage

    before = runner.invoke(app, ["models", "list", "--profile", "offline"])
    assert before.exit_code == 0, before.output
    for name, entry in mirror.files.items():
        assert f"{name:<9} missing" in before.output and str(entry.path) in before.output
        assert f"get it: posetalk-data models pull --only {name}" in before.output
    with pytest.raises(FileNotFoundError, match="models pull --only fan"):
        LandmarksStage(LandmarksConfig(backend="fan"), crop_scale=2.0).check()

    result = pull()
    assert result.exit_code == 0, result.output
    assert "no Hugging Face models" in said(result)
    for entry in mirror.files.values():
        assert entry.path.read_bytes() == (mirror.served / entry.filename).read_bytes()
    assert sorted(p.name for p in mirror.hub.iterdir()) == sorted(e.filename for e in mirror.files.values())
    LandmarksStage(LandmarksConfig(backend="fan"), crop_scale=2.0).check()     # the stage finds FAN's file now

    after = runner.invoke(app, ["models", "list", "--profile", "offline", "--verify"])
    assert after.exit_code == 0, after.output
    for name in mirror.files:
        assert f"{name:<9} present, checked" in after.output and f"--only {name}\n" not in after.output
    again = pull("--only", "fan")
    assert again.exit_code == 0 and "already at" in said(again)


def test_a_download_that_fails_its_check_is_refused_and_nothing_is_left(mirror):
    for name in ("alexnet", "vgg19"):          # one full sha256, one file-name prefix
        (mirror.served / mirror.files[name].filename).write_bytes(b"corrupted in transit")
    result = pull("--only", "alexnet,vgg19")
    assert result.exit_code == 2
    text = said(result)
    assert "alexnet: not fetched" in text and "vgg19: not fetched" in text and "failed its sha256" in text
    assert "could not fetch alexnet, vgg19" in text and "nothing was placed" in text
    assert not mirror.hub.exists() or not any(mirror.hub.iterdir())      # no file, no .partial left behind


def test_only_fetches_what_is_named(mirror):
    result = pull("--only", "syncnet", "--only", "fan")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in mirror.hub.iterdir()) == sorted([mirror.files["syncnet"].filename,
                                                                    mirror.files["fan"].filename])
    unknown = pull("--only", "vgg")
    assert unknown.exit_code == 2 and "unknown weight vgg" in said(unknown) and "vgg19" in said(unknown)


def test_a_file_already_in_place_is_checked_and_never_replaced(mirror):
    dest = mirror.files["alexnet"].path
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the user's own file")
    result = pull("--only", "alexnet")
    assert result.exit_code == 2 and "left as it is" in said(result)
    assert dest.read_bytes() == b"the user's own file"
    listed = runner.invoke(app, ["models", "list", "--profile", "offline", "--verify"])
    assert "alexnet   mismatch" in listed.output and "move it away" in listed.output


def test_a_pulled_syncnet_is_used_by_the_evaluator_without_a_flag(tmp_path, monkeypatch):
    import torch

    from posetalk_models.evaluate.scoring import scorers
    from posetalk_models.nets.syncnet_v2 import SyncNetV2

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    options = dict(lpips_weights=None, syncnet_weights=None, sync_run=None, speech=None, device="cpu")
    missing = scorers(**options)
    assert missing.syncnet is None and "posetalk-data models pull --only syncnet" in missing.errors["lse_d / lse_c"]
    assert "posetalk-data models pull --only alexnet" in missing.errors["lpips"]
    weights.WEIGHT_FILES["syncnet"].path.parent.mkdir(parents=True)
    torch.save(SyncNetV2().state_dict(), weights.WEIGHT_FILES["syncnet"].path)    # untrained: where, not what
    found = scorers(**options)
    assert found.syncnet is not None and "lse_d / lse_c" not in found.errors


def test_the_registry_names_the_files_their_libraries_download():
    """The URLs are the ones torchvision and face-alignment themselves fetch; every file has a digest to check, and a
    full digest agrees with the prefix its file name carries."""
    from face_alignment.api import models_urls
    from torchvision.models import AlexNet_Weights, VGG19_Weights

    files = weights.WEIGHT_FILES
    assert files["vgg19"].url == VGG19_Weights.IMAGENET1K_V1.url
    assert files["alexnet"].url == AlexNet_Weights.IMAGENET1K_V1.url
    assert files["fan"].url == models_urls["2DFAN-4"]
    for entry in files.values():
        assert entry.url.endswith("/" + entry.filename)           # a mirror serves them by file name
        named = re.search(r"-([a-f0-9]{8,})\.", entry.filename)
        if entry.sha256:
            assert len(entry.sha256) == 64 and (named is None or entry.sha256.startswith(named.group(1)))
        else:
            assert entry.digest == named.group(1)
