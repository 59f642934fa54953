"""The evaluator's metrics, each a plain function of frames (uint8 RGB (T, S, S, 3)), face tracks and audio, and
each with the exact definition it is reported under (DEFINITIONS). Metrics that need weights say which file is
missing and how to provide it; the others run regardless. A metric computed with a substitute model is reported
under its own name, never the paper's (dlib identity is not ArcFace CSIM; the posetalk expert's scores are not
SyncNet's LSE; landmark expression distance is not 3DMM AED).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from posetalk_data.geometry import fit_head_pose, landmarks_to_face_frame, load_face_template
from posetalk_data.weights import WEIGHT_FILES, WeightsMissing, checkpoint_file

from posetalk_models.generate.faces import FaceTrack

LPIPS_FILE = WEIGHT_FILES["alexnet"].filename    # torchvision looks for it under this name
# MediaPipe mesh points that move with expression: lips, eyelids, brows
EXPRESSION_POINTS = np.array(sorted({61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
                                     40, 185, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312,
                                     13, 82, 81, 80, 191, 159, 145, 386, 374, 70, 63, 105, 66, 107, 336, 296, 334,
                                     293, 300}))

DEFINITIONS = {
    "ssim": ("SSIM", "torchmetrics structural_similarity_index_measure (11x11 Gaussian, sigma 1.5) of each frame vs "
                     "the real frame, RGB in [0, 1] at the evaluation size; mean over frames, then clips. Higher is "
                     "better; 1 for identical frames."),
    "psnr": ("PSNR (dB)", "10 log10(1 / MSE), the MSE over all frames and pixels of a clip, RGB in [0, 1]; mean "
                          "over clips; inf for identical clips (so the first frame, which every row gets right in "
                          "self-reenactment, does not make a row infinite)."),
    "lpips": ("LPIPS (AlexNet)", "torchmetrics LearnedPerceptualImagePatchSimilarity, net alex (LPIPS v0.1 heads, "
                                 f"torchvision ImageNet backbone {LPIPS_FILE}), inputs in [-1, 1]; mean over frames, "
                                 "then clips. Lower is better."),
    "identity_arcface": ("IP / CSIM (ArcFace)", "cosine similarity of ArcFace embeddings (5-point aligned 112 x 112) "
                                                "of the source frame and each frame; mean over frames, then clips."),
    "identity_dlib": ("identity cosine (dlib ResNet 128-d; not ArcFace CSIM)",
                      "cosine similarity of dlib's 128-d face descriptor (face-recognition-models "
                      "dlib_face_recognition_resnet_model_v1.dat, 5-point shape predictor) of the source frame and "
                      "each frame; mean over frames, then clips."),
    "aed_landmark": ("AED-lm (landmark expression distance; not 3DMM AED)",
                     "mean distance between the frame's and the real frame's MediaPipe lip, eyelid and brow points "
                     "after removing head pose (similarity fit to the face template), in inter-ocular units; mean "
                     "over frames, then clips. Lower is better."),
    "mouth_open_error": ("mouth-opening error", "mean |gap - real gap| of the inner-lip gap (MediaPipe 13-14) over "
                                                "the inter-ocular distance; lower is better."),
    "pose_error": ("pose error (deg)", "mean absolute yaw/pitch/roll difference between posetalk's extractor run on "
                                       "the frames and on the real frames (the driving pose); lower is better."),
    "gaze_error": ("gaze error (deg)", "mean absolute difference of the two eyes' gaze yaw/pitch, extracted as for "
                                       "the pose error."),
    "pose_diversity": ("pose diversity (deg)", "std over time of the extracted yaw, pitch and roll, averaged over "
                                               "the three and over clips (the real row is the data's own)."),
    "face_found": ("face found", "fraction of frames in which posetalk's extractor finds the face."),
    "lse_d": ("LSE-D (SyncNet v2)", "syncnet_python's evaluation: the mean Euclidean distance of 5-frame lip and "
                                    "0.2 s MFCC embeddings at the best of -15..15 frame shifts; lower is better."),
    "lse_c": ("LSE-C (SyncNet v2)", "the median over shifts of that mean distance minus its minimum; higher is "
                                    "better."),
    "ps_d": ("PS-D (posetalk lip-sync expert; not SyncNet)", "as LSE-D with the project's own expert "
                                                             "(posetalk-train sync): 1 - cosine of its mouth and "
                                                             "speech embeddings, best of -15..15 frame shifts."),
    "ps_c": ("PS-C (posetalk lip-sync expert; not SyncNet)", "as LSE-C with the project's own expert."),
}


# ------------------------------------------------------------------ pixels
def to_unit(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255


def ssim_psnr(frames: np.ndarray, real: np.ndarray) -> dict[str, float]:
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = to_unit(frames), to_unit(real)
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    mse = float((a - b).pow(2).mean())
    return {"ssim": float(ssim.mean()), "psnr": 10 * np.log10(1 / mse) if mse > 0 else float("inf")}


class LPIPS:
    """torchmetrics' LPIPS with AlexNet; the backbone from a path or the torch hub cache (never downloaded)."""

    def __init__(self, weights: str | None = None, device="cpu"):
        import os
        import tempfile

        path = checkpoint_file("LPIPS AlexNet backbone", weights, "alexnet", "--lpips-weights")   # before the import
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        with tempfile.TemporaryDirectory() as home:    # torchvision finds the file where it would download it
            cache = Path(home) / "hub" / "checkpoints"
            cache.mkdir(parents=True)
            (cache / LPIPS_FILE).symlink_to(path.resolve())
            before = os.environ.get("TORCH_HOME")
            os.environ["TORCH_HOME"] = home
            try:
                self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)
            finally:
                os.environ.pop("TORCH_HOME") if before is None else os.environ.__setitem__("TORCH_HOME", before)
        self.device = device

    @torch.no_grad()
    def __call__(self, frames: np.ndarray, real: np.ndarray) -> float:
        values = [float(self.metric(to_unit(frames[i:i + 16]).to(self.device), to_unit(real[i:i + 16]).to(self.device)))
                  * len(frames[i:i + 16]) for i in range(0, len(frames), 16)]
        return sum(values) / len(frames)


# ------------------------------------------------------------------ identity
class DlibIdentity:
    """dlib's 128-d face descriptor, from the weights inside the face-recognition-models wheel. The face rectangle
    comes from posetalk's landmarks of the frame (no second detector)."""

    def __init__(self):
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or importlib.util.find_spec("dlib") is None:
            raise WeightsMissing("the dlib identity metric needs the dlib-bin and face-recognition-models packages "
                                 "(pip install dlib-bin face-recognition-models)")
        import dlib

        models = Path(spec.submodule_search_locations[0]) / "models"
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.dlib = dlib

    def embed(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        (x0, y0), (x1, y1) = landmarks[:, :2].min(0) * frame.shape[1], landmarks[:, :2].max(0) * frame.shape[0]
        rect = self.dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        face = np.ascontiguousarray(frame)
        return np.asarray(self.net.compute_face_descriptor(face, self.shape(face, rect)))

    def __call__(self, source: FaceTrack, track: FaceTrack) -> float:
        ref = self.embed(source.frames[0], source.landmarks[0])
        sims = [cosine(ref, self.embed(f, lm)) for f, lm in zip(track.frames, track.landmarks)]
        return float(np.mean(sims))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


# ------------------------------------------------------------------ geometry of the extracted faces
def expression_points(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 3) crop-unit landmarks -> (T, P, 3) expression points with the head pose removed, in template
    (inter-ocular) units."""
    template = load_face_template()
    points = landmarks_to_face_frame(landmarks.astype(np.float64))
    fit = fit_head_pose(points, template)
    local = np.einsum("tji,tnj->tni", fit.rotation, points - fit.translation[:, None]) / fit.scale[:, None, None]
    return local[:, EXPRESSION_POINTS]


def aligned(a: FaceTrack, b: FaceTrack) -> tuple[slice, slice]:
    """Frame ranges of two tracks of the same video that show the same frames (tracks may start late)."""
    shift = round((b.start - a.start) * 25)
    first_a, first_b = max(shift, 0), max(-shift, 0)
    n = min(len(a.frames) - first_a, len(b.frames) - first_b)
    return slice(first_a, first_a + n), slice(first_b, first_b + n)


def geometry_errors(track: FaceTrack, real: FaceTrack) -> dict[str, float]:
    """Pose, gaze, mouth-opening and landmark-expression differences against the real frames' extraction."""
    mine, theirs = aligned(track, real)
    if mine.stop <= mine.start:
        return {}
    angles, real_angles = track.angles()[mine], real.angles()[theirs]
    expr = np.linalg.norm(expression_points(track.landmarks[mine]) - expression_points(real.landmarks[theirs]),
                          axis=-1)
    return {"pose_error": float(np.abs(angles[:, :3] - real_angles[:, :3]).mean()),
            "gaze_error": float(np.abs(angles[:, 3:] - real_angles[:, 3:]).mean()),
            "mouth_open_error": float(np.abs(track.mouth_opening()[mine] - real.mouth_opening()[theirs]).mean()),
            "aed_landmark": float(expr.mean())}


def diversity(track: FaceTrack) -> float:
    return float(track.angles()[:, :3].std(0).mean())


# ------------------------------------------------------------------ lip sync with the project's expert
@torch.no_grad()
def expert_sync(expert, track: FaceTrack, speech: np.ndarray, *, vshift: int = 15) -> dict[str, float]:
    """PS-D / PS-C: the syncnet_python procedure with the posetalk expert (distance 1 - cosine) over the track's
    mouth crops and the frame-aligned speech features."""
    from posetalk_models.data.frames import crop_mouths, mouth_box

    n, size = expert.cfg.frames, expert.cfg.mouth_size
    t = min(len(track.frames), len(speech)) - n + 1
    if t < 1:
        return {}
    frames = torch.from_numpy(track.frames[:t + n - 1]).permute(0, 3, 1, 2).float()
    boxes = torch.tensor([mouth_box(lm, size[1] / size[0]) for lm in track.landmarks[:t + n - 1]], dtype=torch.float32)
    mouths = crop_mouths(frames, boxes, size) / 127.5 - 1                                 # (T, 3, h, w)
    windows = torch.stack([mouths[i:i + n].reshape(3 * n, *size) for i in range(t)])
    audio = torch.stack([torch.from_numpy(speech[i:i + n]).float() for i in range(t)])
    device = next(expert.parameters()).device
    v = torch.nn.functional.normalize(expert.face(windows.to(device)), dim=-1).cpu()
    a = torch.nn.functional.normalize(expert.audio(expert.speech_norm(audio.to(device)).transpose(1, 2)), dim=-1).cpu()
    padded = torch.nn.functional.pad(a, (0, 0, vshift, vshift))
    dists = torch.stack([1 - (v[[i]] * padded[i:i + 2 * vshift + 1]).sum(-1) for i in range(t)])
    mean = dists.mean(0)
    return {"ps_d": float(mean.min()), "ps_c": float(mean.median() - mean.min())}

