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
STAMP := $(VENV)/.installed-$(ORT)-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test test-compat demo bench bench-compat bundle clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(ORT),train,serve,test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# gapcam's wheel in fresh virtualenvs: the oldest supported onnxruntime, and Pythons 3.10-3.13 where present.
test-compat: $(STAMP)
	$(PY) -m pytest -q -m compat

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

# Which onnxruntime release runs gapcam's graphs at each opset (the table in runtime/compat.py).
bench-compat: $(STAMP)
	$(PY) benchmarks/onnxruntime_compat.py docs/compatibility.md

SHAPES_VERSION := 1.1.0
# Rebuild the shapes package that ships inside gapcam (runtime/models/) from the demo's model.
bundle: $(STAMP)
	test -f demo/metrics.json || $(MAKE) demo
	$(PY) -m zoo pack demo/shapes.onnx --name shapes --version $(SHAPES_VERSION) --license MIT --card docs/shapes_card.md \
		--metrics demo/metrics.json -o build --overwrite $$(for f in demo/images/*.png; do printf -- '--images %s ' $$f; done)
	rm -f runtime/models/shapes-*.zip runtime/models/index.json
	cp build/shapes-$(SHAPES_VERSION).zip runtime/models/
	$(PY) -m zoo publish runtime/models/shapes-$(SHAPES_VERSION).zip --index runtime/models/index.json
	$(PY) -m zoo verify runtime/models/shapes-$(SHAPES_VERSION).zip
