# `make demo` and `make test` set everything up themselves: a .venv with gapcam and its extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m train shapes --out demo/shapes.pt
	$(PY) -m export demo/shapes.pt
	$(PY) -m train.demo demo/shapes.onnx --out demo

clean:
	rm -rf demo .pytest_cache

bench: $(STAMP)
	test -f demo/shapes.onnx || $(MAKE) demo
	$(PY) benchmarks/runtime_bench.py demo/shapes.onnx
