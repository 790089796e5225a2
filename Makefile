# Switchyard: `make help` lists the targets. `make run` and `make test` work on a fresh
# Debian machine with Python 3.11+: they install what they need first.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
PROTO_OUT := services/common/src
PROTOS := $(shell find protos -name '*.proto')
# make run RUN_ARGS='--edges 3': three edge processes sharing rate limits through redis.
RUN_ARGS ?=
# Where tests run in parallel; 'auto' = one worker per core.
TEST_WORKERS ?= auto
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: uv
uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"

.PHONY: sync
sync: uv ## Install the workspace (every service, tool and dev dependency) from uv.lock into .venv.
	@$(UV) sync --locked --quiet

.PHONY: system-deps
system-deps: ## Install the system packages tests need (redis-server) where missing.
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

.PHONY: proto
proto: sync ## Regenerate the gRPC/protobuf code from protos/ (grpcio-tools pinned in uv.lock).
	$(UV) run --locked python -m grpc_tools.protoc -I protos \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)

.PHONY: lint
lint: sync ## ruff (lint and format check) and mypy (strict).
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy -p switchyard -p tests

.PHONY: format
format: sync ## Apply ruff's fixes and formatting.
	$(UV) run --locked ruff check --fix .
	$(UV) run --locked ruff format .

.PHONY: run
run: sync ## Start the whole local stack (simulated engines, adapters, edge) in the foreground; Ctrl-C stops it.
	$(UV) run --locked python -m switchyard.devstack $(RUN_ARGS)

.PHONY: test
test: sync system-deps ## Run every test (lint included).
	$(MAKE) --no-print-directory lint
	$(UV) run --locked pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove caches and the virtualenv.
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
