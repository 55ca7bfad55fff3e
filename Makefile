# Two entry points for users: `make demo` and `make test`. Both create and fill .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

# `make images-test` builds both images (CPU flavour) in a container engine and runs them for real.
.PHONY: venv demo test test-fast images-test bench-train bench-serve bench-eval bench-transfer lint clean

venv: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml scripts/install_detectron2.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# pip 25.1+ refuses the detectron2 sdist's metadata (a direct-URL extra); see install_detectron2.py
	$(PY) -m pip install -q 'pip==25.0.1' 'setuptools<81' wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) scripts/install_detectron2.py
	$(PY) -m pip install -q -e '.[serve,pipeline,train,dev]'
	touch $@

demo: venv
	$(VENV)/bin/detector pipeline --local

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

images-test: venv
	PYTHON=$(PY) scripts/images_test.sh

bench-train: venv
	$(PY) benchmarks/train_throughput.py

bench-serve: venv
	$(PY) benchmarks/serve_latency.py

bench-eval: venv
	$(PY) benchmarks/evaluate_throughput.py

bench-transfer: venv
	$(PY) benchmarks/transfer.py

clean:
	rm -rf $(VENV) .cache
