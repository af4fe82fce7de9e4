# The README's commands. `make run` and `make test` are the two-command quickstart.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock run test unit integration lint format typecheck bench up down status schemas clean

# The locked versions first (the ones the images install), then the package and the dev
# tools around them.
$(STAMP): pyproject.toml requirements/train.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/train.lock
	$(BIN)/python -m pip install --quiet -e '.[train,review,dev]'
	touch $(STAMP)

# kustomize renders k8s/ for the manifest tests; built from the Go module proxy (Go is on
# every machine we use), about a minute the first time.
KUSTOMIZE_VERSION := v5.7.1
$(BIN)/kustomize: $(STAMP)
	GOBIN=$(abspath $(BIN)) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

install: $(STAMP) $(BIN)/kustomize  ## create .venv and install fraudstream with the train and dev extras, and kustomize

# Re-resolve the pinned, hashed versions the images and `make install` use (after editing
# dependencies in pyproject.toml); serving.lock is train.lock's versions without the extra.
LOCK := $(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 -q
lock: install  ## re-resolve requirements/*.lock from pyproject.toml
	$(LOCK) --extra train --extra review --upgrade -o requirements/train.lock
	$(LOCK) --extra review -c requirements/train.lock -o requirements/serving.lock

run: install  ## start Kafka + Redis, provision topics, stream simulated traffic (Ctrl-C stops); DRIFT=1: the retraining loop
	$(BIN)/fraudctl demo $(if $(DRIFT),--drift)

test: install  ## unit + integration tests (starts a private Kafka and Redis on free ports)
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/ruff check services tests load_tests
	$(BIN)/ruff format --check services tests load_tests
	$(BIN)/hadolint Dockerfile

format: install
	$(BIN)/ruff check --fix services tests load_tests
	$(BIN)/ruff format services tests load_tests

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy tests load_tests

bench: install  ## micro-benchmarks that need no services
	$(BIN)/python load_tests/bench_codec.py

up down status: install
	$(BIN)/fraudctl $@

schemas: install  ## regenerate schemas/ after changing a contract
	$(BIN)/fraudctl schemas export

clean:  ## stop the local stack and remove its state (keeps the jar cache)
	-$(BIN)/fraudctl down
	rm -rf .fraudstream
