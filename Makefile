# One-command set-up: `make shards` (demo build) and `make test` each work alone on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.posetalk-installed
OUT    ?= out/demo

.PHONY: setup ffmpeg shards test bench clean

setup: ffmpeg $(STAMP)

# FFmpeg is a system tool: install it with apt where we can, otherwise say how.
ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "ffmpeg/ffprobe missing: install FFmpeg (e.g. sudo apt-get install ffmpeg) and re-run" >&2; exit 1; fi; }

# torch + torchvision first (the pair that imports together here), then the rest under the same constraints.
$(STAMP): pyproject.toml requirements/base.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c requirements/constraints.txt torch torchvision
	$(PIP) install -q -c requirements/constraints.txt -r requirements/base.txt
	# PySceneDetect (scene cuts) without its dependencies: it asks for opencv-python, whose cv2 would clash with
	# opencv-contrib-python's; its small pure-python dependencies (click, tqdm, platformdirs) are named here or come
	# with base.txt
	$(PIP) install -q --no-deps -c requirements/constraints.txt scenedetect platformdirs
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

shards: setup
	$(VENV)/bin/posetalk-data build --src demo --out $(OUT)

test: setup
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(PY) -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(PY) bench/extract.py
	HF_HUB_OFFLINE=1 $(PY) bench/audio.py
	HF_HUB_OFFLINE=1 $(PY) bench/train_pose.py
	HF_HUB_OFFLINE=1 $(PY) bench/train_video.py

clean:
	rm -rf out .pytest_cache
