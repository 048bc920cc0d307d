# The README's two commands are `make run` and `make test`; both run `make setup` first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup lock run test lint format demo clean

setup: $(STAMP)

# Every distribution comes from the lock, pinned with its hash (torch: the CPU build), then the
# project itself without its dependencies; the build requirements are in the lock too.
# Re-install only when the lock changes, so a second `make setup` takes a second.
LOCK := requirements/lock.txt

$(STAMP): $(LOCK) pyproject.toml scripts/system-packages.sh
	bash scripts/system-packages.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# After a change to pyproject.toml's dependencies: resolve again and rewrite the lock (commit it).
# Versions already locked stay where they still fit; `make lock LOCK_UPGRADE=1` takes the newest.
lock:
	$(PY) scripts/lock.py $(LOCK)

run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py runserver --noreload $(HOST):$(PORT)

# The tests use PostgreSQL and Redis for real (this kind of machine runs both on loopback).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/adapterhub

test: setup
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var

# The production-style stack without Docker (docs/operations.md): gunicorn, a Celery worker and
# beat on local PostgreSQL and Redis; settings in $(STACK_DIR)/stack.env (written if missing).
STACK_DIR ?= var/stack

.PHONY: stack-up stack-down stack-status

stack-up: setup
	bash scripts/stack/start.sh $(STACK_DIR)

stack-down:
	bash scripts/stack/stop.sh $(STACK_DIR)

stack-status:
	bash scripts/stack/status.sh $(STACK_DIR)

# The Docker stack for real (scripts/docker_smoke.py): base images from Debian packages, an offline
# build from a wheelhouse, the stack up, sync, push, downloads through nginx, a restart, then two
# web and two workers on S3. Installs and starts the engine when missing (root). SMOKE_ARGS=--keep
# leaves the last stack running; `make docker-smoke SMOKE_ARGS=--down` removes what a run left.
.PHONY: docker-smoke docker-base-images docker-wheelhouse

docker-smoke: setup
	$(BIN)/python scripts/docker_smoke.py $(SMOKE_ARGS)

# The two offline inputs on their own (docs/operations.md, "Building without a registry").
docker-base-images:
	bash scripts/docker_base_images.sh $(or $(BASE_PREFIX),local)

docker-wheelhouse: setup
	PYTHON=$(BIN)/python bash scripts/docker_wheelhouse.sh
