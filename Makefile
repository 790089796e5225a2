# Switchyard: `make help` lists the targets. `make run` and `make test` work on a fresh
# Debian machine with Python 3.11+: they install what they need first.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
PROTO_OUT := libs/inference/src
PROTOS := $(shell find protos -name '*.proto')
# make run RUN_ARGS='--edges 3': three edge processes sharing rate limits through redis.
RUN_ARGS ?=
# make bench BENCH_ARGS='--no-litellm --scale 0.5'
BENCH_ARGS ?=
# make soak SOAK_ARGS='--minutes 2' (shorter), SOAK_ARGS='--keepalive-s 1' (faster pings, shorter gaps)
SOAK_ARGS ?=
# Where tests run in parallel; 'auto' = one worker per core.
TEST_WORKERS ?= auto
PYTEST_ARGS ?=
# The chart tests run Helm through helm-sdkpy, which needs Python 3.12: a second environment,
# made from the same uv.lock (dependency group `chart`). PYTHON312=/path/to/python3.12 overrides.
CHART_VENV := .venv-chart
PYTHON312 ?= $(shell ls -d "$$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1 \
  || true)
ifeq ($(strip $(PYTHON312)),)
PYTHON312 := $(shell command -v python3.12 2>/dev/null)
endif
# Engine release wheels whose request models the adapter tests check bodies against (read
# from the zip, never installed). One pinned file whatever the host: the modules the tests
# read are pure Python, the same in every wheel of the release. ENGINE_WHEELS=/elsewhere
# keeps them out of the checkout.
ENGINE_WHEELS ?= .cache/engine-wheels
SGLANG_VERSION := 0.5.23
SGLANG_WHEEL := sglang-$(SGLANG_VERSION)-cp311-cp311-manylinux_2_34_x86_64.whl
SGLANG_WHEEL_SHA256 := 00b3cd5b265ac76c64185fbb6b95424f324ddd9f428d0306b77bc9db9d859937

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: uv
uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"

.PHONY: sync
sync: uv ## Install the workspace (every service, tool and dev dependency) from uv.lock into .venv.
	@$(UV) sync --locked --quiet

.PHONY: chart-env
chart-env: uv ## Make .venv-chart (Python 3.12, helm-sdkpy) for the chart tests, from uv.lock.
	@if [ -z "$(PYTHON312)" ]; then \
	  echo "error: the chart tests need Python 3.12 (helm-sdkpy is built for 3.12+) and none was found" >&2; \
	  echo "       (looked in \$$(pyenv root)/versions/3.12*/ and for python3.12 on PATH);" >&2; \
	  echo "       install one (e.g. 'pyenv install 3.12') or run: make test PYTHON312=/path/to/python3.12" >&2; \
	  exit 1; fi
	@UV_PROJECT_ENVIRONMENT=$(CHART_VENV) $(UV) sync --locked --quiet --python "$(PYTHON312)" --only-group chart

.PHONY: system-deps
system-deps: ## Install the system packages tests need (redis-server, redis-sentinel) where missing.
	@command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1 || { \
	  echo "installing redis-server and redis-sentinel"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server redis-sentinel >/dev/null; }

.PHONY: engine-wheels
engine-wheels: ## Fetch the engine wheels whose request models the adapter tests use (once, 39 MB).
	@[ -f "$(ENGINE_WHEELS)/$(SGLANG_WHEEL)" ] || { \
	  echo "downloading $(SGLANG_WHEEL) into $(ENGINE_WHEELS)/"; \
	  tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: -d "$$tmp" \
	    --platform manylinux_2_34_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
	    "sglang==$(SGLANG_VERSION)"; \
	  echo "$(SGLANG_WHEEL_SHA256)  $$tmp/$(SGLANG_WHEEL)" | sha256sum --check --quiet; \
	  mkdir -p "$(ENGINE_WHEELS)"; mv "$$tmp/$(SGLANG_WHEEL)" "$(ENGINE_WHEELS)/"; }

.PHONY: proto
proto: sync ## Regenerate the gRPC/protobuf code from protos/ (grpcio-tools pinned in uv.lock).
	$(UV) run --locked python -m grpc_tools.protoc -I protos \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)

.PHONY: crd
crd: sync ## Regenerate the ModelBackend CRD from the operator's models (a test fails when it is stale).
	$(UV) run --locked python -m switchyard.operator crd > charts/switchyard/crds/modelbackends.switchyard.dev.yaml

.PHONY: lint
lint: sync ## ruff (lint and format check) and mypy (strict).
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	@# Paths, not `-p switchyard`: over a namespace package spread across many source
	@# roots, -p finds the first root's modules only (the others went unchecked).
	$(UV) run --locked mypy libs/*/src services/*/src tools/*/src tests

.PHONY: format
format: sync ## Apply ruff's fixes and formatting.
	$(UV) run --locked ruff check --fix .
	$(UV) run --locked ruff format .

.PHONY: run
run: sync ## Start the whole local stack (simulated engines, adapters, edge) in the foreground; Ctrl-C stops it.
	$(UV) run --locked python -m switchyard.devstack $(RUN_ARGS)

.PHONY: test
test: sync chart-env system-deps engine-wheels ## Run every test (lint included).
	$(MAKE) --no-print-directory lint
	SWITCHYARD_CHART_PYTHON=$(CURDIR)/$(CHART_VENV)/bin/python \
	SWITCHYARD_ENGINE_WHEELS=$(abspath $(ENGINE_WHEELS)) \
	  $(UV) run --locked pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

.PHONY: dev
dev: ## skaffold dev on a local cluster (kind, minikube, k3d): simulated engines, no GPU.
	@command -v skaffold >/dev/null 2>&1 || { echo "error: skaffold not found (https://skaffold.dev/docs/install/)" >&2; exit 1; }
	@command -v helm >/dev/null 2>&1 || { echo "error: helm not found (https://helm.sh/docs/intro/install/)" >&2; exit 1; }
	skaffold dev -p local

.PHONY: bench
bench: sync system-deps ## Switchyard against the engine alone, the bare relay and LiteLLM's proxy (about 10 min, with the noisy-neighbour and multi-turn scenarios; results in bench/results/).
	$(UV) run --locked python -m switchyard.bench $(BENCH_ARGS)

.PHONY: soak
soak: sync system-deps ## 10 minutes of bursts, streams and idle gaps at production keepalive intervals; counts by status, GOAWAYs, edge RSS and fds.
	$(UV) run --locked python -m tests.reliability.soak $(SOAK_ARGS)

.PHONY: clean
clean: ## Remove caches and the virtualenv.
	rm -rf .venv .venv-chart .pytest_cache .mypy_cache .ruff_cache .cache/engine-wheels
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
