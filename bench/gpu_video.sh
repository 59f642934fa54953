#!/usr/bin/env bash
# The video generator's GPU check, on the device machine (see bench/gpu_video.py: `prep` here first).
# device tool: run(command="bash bench/gpu_video.sh", carry=["out/gpu-video", ".whl"], timeout_s=560)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 bench/gpu_video.py run --seconds "${STAGE_SECONDS:-150}" "$@"
