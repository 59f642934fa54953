import pytest

from posetalk_data.config import PIPELINES, ConfigError, load_config, parse_override


@pytest.mark.parametrize("name", sorted(p.name for p in PIPELINES.glob("*.yaml")))
def test_shipped_pipelines_load(name):
    from posetalk_models.train.config import SHIPPED, load_train_config

    kind = {stem: kind for kind, stem in SHIPPED.items()}.get(name.removesuffix(".yaml"))
    if kind is None:                   # a build's pipeline
        load_config(PIPELINES / name)
        return
    cfg = load_train_config(kind, PIPELINES / name)   # a trainer's config at the size for real data
    if kind in ("vae", "pld"):
        assert cfg.data.window == 64   # the VAE and PLD configs must agree on the window
    else:
        assert cfg.data.size == 256    # PoseTalk's size; the three stages and the expert must agree
        assert cfg.model.size == 256 if kind != "sync" else cfg.model.mouth_size == (48, 96)


def test_training_overrides_keep_the_sections_other_defaults():
    from posetalk_models.train.config import load_train_config

    cfg = load_train_config("pld", None, ["loop.max_steps=3", "model.layers=3"])
    assert (cfg.loop.max_steps, cfg.loop.lr, cfg.model.layers) == (3, 3e-4, 3)  # lr stays the PLD default
    with pytest.raises(ConfigError, match="model.layer"):
        load_train_config("pld", None, ["model.layer=3"])


def test_override_is_typed_and_applied():
    cfg = load_config(PIPELINES / "folder.yaml", ["facetrack.crop_size=256", "facetrack.multi_face=drop"])
    assert cfg.facetrack.crop_size == 256 and cfg.facetrack.multi_face == "drop"
    assert parse_override("pose.smooth_s=0.5") == ("pose.smooth_s", 0.5)


@pytest.mark.parametrize("override, words", [
    ("facetrack.crop_sise=256", ["facetrack.crop_sise", "folder.yaml"]),
    ("landmarks.backend=dlib", ["landmarks.backend", "mediapipe"]),
    ("facetrack.crop_size=tiny", ["facetrack.crop_size"]),
    ("normalise.fps=30", ["normalise.fps"]),
])
def test_bad_override_names_key_and_file(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(PIPELINES / "folder.yaml", [override])
    for word in words:
        assert word in str(err.value)


def test_unknown_key_in_yaml_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("facetrack:\n  crop_size: 256\n  smoothing: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: facetrack.smoothing"):
        load_config(bad)
