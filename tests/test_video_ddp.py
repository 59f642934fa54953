"""DDP for the video generator: a real 2-process CPU run (gloo, torchrun) of CoarseNet, then of the enhancer with
its discriminator (two optimisers, two DDP wrappers), ends with identical weights on both ranks, equal to what
rank 0 saved.

Run as a script (`torchrun ... tests/test_video_ddp.py MANIFEST OUT`) this file is that run's worker."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from test_pose_ddp import torchrun, weights_hash

TINY = ["loop.max_steps=3", "loop.progress=false", "loop.num_workers=0", "loop.batch_size=2", "loop.log_every=1",
        "loop.tensorboard=false", "loop.device=cpu", "data.samples_per_clip=2", "data.shuffle_buffer=2"]


def rank_main(manifest: Path, out: Path) -> None:
    from posetalk_models.train import loop as trainer
    from posetalk_models.train import video_objective
    from posetalk_models.train.coarse import train_coarse
    from posetalk_models.train.enhance import train_enhance
    from posetalk_models.train.config import load_train_config

    trained = {}

    def train_keeping_the_objective(name, run_dir, objective, *args, **kwargs):
        trained[Path(run_dir).name] = objective
        return trainer.train(name, run_dir, objective, *args, **kwargs)

    video_objective.train = train_keeping_the_objective       # the loop every video trainer's run_stage calls
    train_coarse(manifest, out / "coarse", load_train_config("coarse", None, [*TINY,
                                                                                          "warp_only_steps=1"]))
    train_enhance(manifest, out / "enhance", load_train_config("enhance", None, [*TINY, "loss.gan=1"]))
    record = {run: {"model": weights_hash(objective.model)} for run, objective in trained.items()}
    record["enhance"]["discriminator"] = weights_hash(trained["enhance"].discriminator)
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))


def test_two_process_video_training(video_build, tmp_path):
    from safetensors.torch import load_file

    from posetalk_models.nets.coarsenet import CoarseNet, CoarseNetConfig
    from posetalk_models.train.config import load_train_config
    from posetalk_models.nets.refinenet import RefineNet
    from posetalk_models.checkpoints import save_weights

    # the enhance run's frozen stages: an untrained CoarseNet and RefineNet, copied in so no rank has to
    run = tmp_path / "enhance"
    run.mkdir()
    for name, model, cfg in (("coarse", CoarseNet, load_train_config("coarse", None, TINY)),
                             ("refine", RefineNet, load_train_config("refine", None, TINY))):
        motion = cfg.model.motion.model_copy(update={"speech_dim": 80})
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"motion": motion})})
        data = cfg.data.model_copy(update={"speech": "mel"})
        save_weights(run / f"{name}.safetensors", model(cfg.model),
                     {"kind": name, "config": {**cfg.model_dump(), "data": data.model_dump()}})
    status, output = torchrun([str(video_build / "train.json"), str(tmp_path)], tmp_path / "torchrun.log",
                              timeout=180, script=__file__)
    assert status == 0, output[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1], ranks                                   # every model, and the discriminator
    sidecar = json.loads((tmp_path / "coarse" / "step-00000003.json").read_text())
    saved = CoarseNet(CoarseNetConfig(**sidecar["config"]["model"]))
    saved.load_state_dict(load_file(str(tmp_path / "coarse" / "step-00000003.safetensors")))
    assert ranks[0]["coarse"]["model"] == weights_hash(saved)
    steps = [json.loads(line)["step"] for line in (tmp_path / "enhance" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]                                           # rank 0 alone logged


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]), Path(sys.argv[2]))
