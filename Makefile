# Entry points. Every target does its own set-up: `.venv` is created and the pinned stack installed
# (scripts/install.sh, the same script CI and the Dockerfile use) whenever the requirements change. Serving
# targets (serve, stop, status, models, scale, archive, download, train-demo) install the runtime stack only;
# test, lint and the benchmarks add the test tools and the toolboxes' reference environments (--dev). The targets
# call the project's command line, .venv/bin/slowfast-serve (`slowfast-serve --help` lists all it does).
#
#   make serve [MODEL=slowfast_r50] [CHECKPOINT=path.pyth] [LABELS=labels.json] [NAME=name] [RANDOM_INIT=1] [MODEL_API=1]
#              [LIMITS="max_decode_seconds=10 max_window_mb=256"] [INFERENCE="precision=bf16 decode_workers=2"]
#              [EXPORT=eager|torchscript|aoti|openvino] [CALIBRATION=videos/]   (default: the checkpoint plus
#              the OpenVINO fp32 network CPU workers serve; EXPORT forces one form, exported and checked at
#              archive time; CALIBRATION: the videos an EXPORT=openvino INFERENCE=precision=int8 archive is
#              quantized with: docs/export.md)
#   make serve MODEL=slowfast_r50_detection|slow_r50_detection [CHECKPOINT=...] [DETECTOR=hog|fasterrcnn_resnet50_fpn|
#              fasterrcnn_resnet50_fpn_v2] [DETECTOR_CHECKPOINT=path.pth] [DETECTOR_THRESHOLD=0.75] [MAX_BOXES=32]
#              AVA actions per person box; the detector finds people when a request gives no boxes (docs/detection.md)
#              [WEB=0] [WEB_PORT=8090]   the web page to try the model, on http://127.0.0.1:8090/ (docs/web.md);
#              WEB=0 leaves it out
#   make stop            stops TorchServe and the web page
#   make models          describe the served models (workers, batching); make scale NAME=... WORKERS=2
#   make test            the whole suite (unit, parity, TorchServe integration) plus lint
#   make test-quick      the unit tests alone, in about 2 minutes: the edit-test loop (CONTRIBUTING.md)
#   make web-screenshots the web page's screenshots in docs/images/, taken by its browser test (docs/web.md)
#   make archive MODEL=... [CHECKPOINT=...|RANDOM_INIT=1]   (default: the bundled or cached official weights)
#   make download MODEL=...
#   make train-demo      re-create the synthetic dataset and re-train models/motion_demo (at most 45 minutes on
#                        2 cores)
#   make demo-accuracy   motion_demo's accuracy through TorchServe on new clips of its own generator and of the
#                        independent one (docs/demo-accuracy.md)
#   make bench           TorchServe end to end, the tutorial as a handler against ours, plus the stage
#                        benchmark (reports in docs/bench.md and docs/bench-stages.md; about 12 minutes on 2 cores)
#   make bench-stages    the stage benchmark alone: decode + preprocess per clip, forward per batch size
#   make bench-models    forward time of every registry model on the CPU (docs/bench-models.md, the tables of docs/models.md)
#   make bench-memory    worker memory (peak, after) under bursts of 1x1 and 10x3 requests at 256p, 720p and
#                        1080p (docs/bench-memory.md; about 15 minutes on 2 cores)
#   make bench-detection AVA detection through TorchServe at 720p: keyframes/s with 1, 4, 16 given boxes and with
#                        each person detector, stage shares, peak worker memory, bf16 agreement (docs/bench-detection.md)
#   make bench-smoothing timeline events against the known change points of edited videos: the smoothing
#                        defaults of slowfast-serve timeline (docs/bench-smoothing.md, docs/timeline.md)
#   make bench-live      frame-to-answer latency of slowfast-serve stream on a live RTSP camera stand-in
#                        (docs/bench-live.md, docs/streams.md)
#   make bench-long      an hour of video in parts through the default limits vs one unlimited request
#                        (docs/bench-long-timeline.md, docs/timeline.md)
#   make bench-export    eager (fp32, bf16) vs TorchScript vs AOTInductor vs OpenVINO (fp32, bf16, int8): forward
#                        time and agreement (docs/bench-export.md)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/slowfast-serve
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

MODEL ?= slowfast_r50
CHECKPOINT ?=
LABELS ?=
NAME ?=
RANDOM_INIT ?=
LIMITS ?=
INFERENCE ?=
EXPORT ?=
CALIBRATION ?=
MODEL_API ?=
DETECTOR ?=
DETECTOR_CHECKPOINT ?=
DETECTOR_THRESHOLD ?=
MAX_BOXES ?=
WEB ?=
WEB_PORT ?=
WORKERS ?= 1
PYTEST_ARGS ?=

# Paths are single-quoted: a toolbox's file name may hold a glob character (PaddleVideo's SlowFast_8*8.pdparams).
weights_args = $(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init,$(if $(CHECKPOINT),--checkpoint '$(CHECKPOINT)'))
model_args = --model $(MODEL) $(weights_args) $(if $(LABELS),--labels '$(LABELS)') $(if $(NAME),--name $(NAME)) \
	$(foreach limit,$(LIMITS),--limit $(limit)) $(foreach option,$(INFERENCE),--inference $(option)) \
	$(if $(EXPORT),--inference export=$(EXPORT)) $(foreach path,$(CALIBRATION),--calibration '$(path)') \
	$(if $(DETECTOR),--detector $(DETECTOR)) $(if $(DETECTOR_CHECKPOINT),--detector-checkpoint '$(DETECTOR_CHECKPOINT)') \
	$(if $(DETECTOR_THRESHOLD),--detector-threshold $(DETECTOR_THRESHOLD)) $(if $(MAX_BOXES),--max-boxes $(MAX_BOXES))

DEMO_DATA ?= data/motion

.PHONY: setup serve models scale stop status archive download train-demo demo-accuracy bench bench-models bench-stages bench-export \
	bench-memory bench-detection bench-smoothing bench-live bench-long \
	test test-quick web-screenshots lint clean

setup: $(STAMP)

$(RUNTIME): requirements.txt requirements-java.txt pyproject.toml scripts/install.sh
	scripts/install.sh --venv $(VENV)
	touch $@

$(STAMP): $(RUNTIME) requirements-dev.txt $(wildcard tests/toolboxes/requirements-*.txt)
	scripts/install.sh --venv $(VENV) --dev
	touch $@

serve: $(RUNTIME)
	$(CLI) serve $(model_args) $(if $(filter 1 yes true,$(MODEL_API)),--enable-model-api) \
		$(if $(WEB_PORT),--web-port $(WEB_PORT)) $(if $(filter 0 no false,$(WEB)),--no-web)

models: $(RUNTIME)
	$(CLI) models

scale: $(RUNTIME)
	$(CLI) scale $(or $(NAME),$(MODEL)) --workers $(WORKERS)

stop: $(RUNTIME)
	$(CLI) stop

status: $(RUNTIME)
	$(CLI) status

archive: $(RUNTIME)
	$(CLI) archive $(model_args)

download: $(RUNTIME)
	$(CLI) download $(MODEL)

# The exact recipe of the committed models/motion_demo (seeds fixed; see models/motion_demo/training.json).
train-demo: $(RUNTIME)
	rm -rf $(DEMO_DATA)/train $(DEMO_DATA)/val
	$(CLI) motion-data $(DEMO_DATA)/train --per-class 250 --seed 0
	$(CLI) motion-data $(DEMO_DATA)/val --per-class 24 --seed 1
	$(CLI) finetune $(DEMO_DATA)/train --val $(DEMO_DATA)/val --model motion_demo \
		--hflip models/motion_demo/hflip.json --motion-stem --optimizer adamw --lr 0.0015 --weight-decay 0.05 \
		--epochs 14 --batch-size 16 --precision bf16 --crop-jitter 0.3 --workers 1 --seed 0 --out models/motion_demo

# Both benchmarks need ffmpeg (installed by `make setup`); the workloads are made with it. Ours runs with the
# batch size measured best for a CPU (docs/performance.md) and the default engine (OpenVINO fp32 on a CPU), and
# again forced eager, with bf16 autocast and as OpenVINO bf16 and int8 exports; at 720p it also serves
# mmaction2_slowfast_r50_8x8 and times MMAction2's own test pipeline on the same upload (needs .venv-ref/, which
# `make test`'s set-up builds).
bench: bench-stages
	$(PY) -m bench.serving --workloads 720p 1080p 256p --requests 12 --concurrency 4 --batch-size 2 \
		--max-batch-delay 50 --also export=eager --also precision=bf16 --also "export=openvino precision=bf16" \
		--also "export=openvino precision=int8" --toolbox-model mmaction2_slowfast_r50_8x8 --report docs/bench.md

bench-smoothing: $(STAMP)
	$(PY) -m bench.smoothing --report docs/bench-smoothing.md

bench-live: $(STAMP)
	$(PY) -m bench.live_latency --seconds 60 --report docs/bench-live.md

bench-long: $(STAMP)
	$(PY) -m bench.long_timeline --minutes 60 --report docs/bench-long-timeline.md

bench-models: $(STAMP)
	$(PY) -m bench.models --repeats 3 --report docs/bench-models.md

bench-memory: $(STAMP)
	$(PY) -m bench.memory --workloads 256p 720p 1080p --views 1x1 10x3 --concurrency 1 4 8 --report docs/bench-memory.md

bench-detection: $(STAMP)
	$(PY) -m bench.detection --boxes 1 4 16 --requests 12 --concurrency 4 --report docs/bench-detection.md

bench-export: $(STAMP)
	$(PY) -m bench.export --batch-sizes 1 4 --repeats 3 --report docs/bench-export.md

demo-accuracy: $(STAMP)
	$(PY) -m bench.demo_accuracy --per-class 25 --report docs/demo-accuracy.md

bench-stages: $(STAMP)
	$(PY) -m bench.stages --model slowfast_r50 --repeats 5 --report docs/bench-stages.md

lint: $(STAMP)
	$(VENV)/bin/ruff check handler slowfast_serve tests bench
	$(VENV)/bin/ruff format --check handler slowfast_serve tests bench

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The edit-test loop: no TorchServe, no reference environments, nothing marked slow (CONTRIBUTING.md).
QUICK := not integration and not reference and not gpu and not toolbox_matrix and not slow
test-quick: $(STAMP)
	$(PY) -m pytest -m "$(QUICK)" $(PYTEST_ARGS)

web-screenshots: $(STAMP)
	WEB_SCREENSHOTS=docs/images $(PY) -m pytest tests/test_web.py

clean:
	rm -rf build run .pytest_cache .ruff_cache model_store/*.mar model_store/*.build.json
