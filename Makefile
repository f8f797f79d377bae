# fl-async developer commands. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAMP_RUN := $(VENV)/.installed-run
TORCH_PIN := torch==2.13.0
PROTO_SRC := $(wildcard proto/fl_async/v1/*.proto)
PROTO_OUT := fl_async/proto

.PHONY: venv test proto proto-check run bench bench-peer clean

# Everything (what `make test` and CI need): the test, dev, torch, examples, plot and ray extras, torch pinned to the
# CPU build this machine installs from disk (the torch extra itself is a range).
$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fl-async needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >/dev/null  # a `make run` venv has no pip
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev,torch,examples,plot,ray]' '$(TORCH_PIN)'
	touch $(STAMP) $(STAMP_RUN)

# Only what the quickstart needs (`make run`): fl-async and the examples extra; no torch. Installed with uv (a fresh
# install takes ~4 s against pip's ~30 s here); like pip with --no-compile, uv leaves bytecode to first import (Python
# compiles only the modules it imports, on first import (pip would compile all of scipy's up front).
$(STAMP_RUN): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fl-async needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	@echo "installing fl-async and the examples extra into $(VENV) with uv (no torch)..."
	test -x $(VENV)/uv/bin/uv || $(PYTHON) -m pip install -q --target $(VENV)/uv uv
	$(VENV)/uv/bin/uv pip install -q --python $(PY) -e '.[examples]'
	touch $(STAMP_RUN)

venv: $(STAMP)

## proto: regenerate fl_async/proto from proto/*.proto with betterproto2
proto: $(STAMP)
	rm -rf $(PROTO_OUT) && mkdir -p $(PROTO_OUT)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m grpc_tools.protoc -I proto \
	  --python_betterproto2_out=$(PROTO_OUT) \
	  --python_betterproto2_opt=client_generation=async,server_generation=async $(PROTO_SRC)
	touch $(PROTO_OUT)/fl_async/__init__.py  # betterproto2 leaves the intermediate package without one

## proto-check: fail if the committed generated code is stale
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m grpc_tools.protoc -I proto \
	  --python_betterproto2_out=$$tmp \
	  --python_betterproto2_opt=client_generation=async,server_generation=async $(PROTO_SRC) >/dev/null 2>&1 && \
	touch $$tmp/fl_async/__init__.py && \
	diff -r -q $$tmp $(PROTO_OUT) -x __pycache__ && echo "proto: generated code is up to date" || \
	{ echo "proto: fl_async/proto is stale; run 'make proto' and commit"; rm -rf $$tmp; exit 1; }; rm -rf $$tmp

## test: create .venv, install everything, check generated code, run the suite
test: $(STAMP) proto-check
	$(PY) -m pytest -q -p no:cacheprovider

## run: train a federated model on scikit-learn's digits over 10 in-process SuperNodes (installs no torch)
run: $(STAMP_RUN)
	$(VENV)/bin/fl-async run examples.quickstart.server:app examples.quickstart.client:app \
	  --num-supernodes 10 $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

bench-peer: $(STAMP)
	$(PY) -m benchmarks.peer $(ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache
