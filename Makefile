# flashsale: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SKU ?= iphone-17
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup redis run demo test lint typecheck unit lock loadtest bench rehearsal faults images deploy clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) redis ## install what is missing: a virtualenv, the pinned requirements, redis-server, haproxy

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

redis: ## install redis-server and haproxy (the rehearsal's proxies) through the system package manager if they are missing
	@missing=""; \
	  command -v redis-server >/dev/null || missing="redis-server"; \
	  command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || missing="$$missing haproxy"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    if command -v apt-get >/dev/null; then $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	    elif command -v brew >/dev/null; then brew install $${missing/redis-server/redis}; \
	    else echo "install$$missing with your package manager" >&2; exit 1; fi; \
	  fi

run: setup ## redis-server and the functions on 127.0.0.1:8081-8083, their log lines on the terminal and in var/log/ (Ctrl-C stops all, within 5 s)
	$(BIN)/flashsale run $(RUN_ARGS)

demo: setup ## set up and run a small flash sale end to end, then print the verdict
	$(BIN)/flashsale demo --buyers 300 --stock 100

lint: setup ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup ## mypy, strict, on shared/, ops/, functions/ and tests/
	$(BIN)/mypy

test: setup lint typecheck ## set up, then lint, type-check and run every test
	$(BIN)/pytest

unit: setup ## the fast tests only (no servers)
	$(BIN)/pytest -m "not integration and not concurrency and not loadtest"

loadtest: setup ## the k6 crowd (BUYERS=10000 STOCK=1000) against a private local stack, judged from the database
	$(BIN)/python -m loadtest.run --buyers $(or $(BUYERS),10000) --stock $(or $(STOCK),1000)

bench: setup ## every scenario beside its baseline: report, charts and figures in bench/results/<timestamp>/ (BENCH_ARGS=--quick for a short run)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

rehearsal: setup ## Knative's data path here (ingress, activator, queue-proxies, pods): crowd, login storm, scale-down/up, Redis killed; REHEARSAL_ARGS=--quick
	$(BIN)/python -m rehearsal.run $(REHEARSAL_ARGS)

faults: setup ## every fault scenario at full size (SIGKILL, Redis restart/flush/down, database locked/failing, retries, slow clients)
	$(BIN)/python -m tests.faults

images: ## build and push the function images: make images REGISTRY=ghcr.io/you [TAG=v1] [DRY_RUN=1]
	bash scripts/images.sh

deploy: $(STAMP) ## deploy to Knative (Serving and Eventing 1.13+, checked first): make deploy REGISTRY=... [TAG=...] [DRY_RUN=1] [MODE=kustomize]
	PYTHON=$(BIN)/python bash scripts/deploy.sh

lock: ## re-pin requirements.txt and requirements-dev.txt from the .in files
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.txt requirements.in
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in

clean: ## remove local state (database, keys, logs, devstack.json, results); keeps the virtualenv
	rm -rf var bench/results rehearsal/results .pytest_cache .mypy_cache .ruff_cache
