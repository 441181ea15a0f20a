# The template's task runner. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := bash
VENV := .venv
BIN := $(VENV)/bin
# Our own uv, from PyPI into our own venv: nothing needs installing first, and nothing is
# installed outside this directory.
UV := $(CURDIR)/$(BIN)/uv
CHECKOV := $(VENV)/checkov/bin/checkov
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install test lint demo bench bench-web bench-hostile clean pgbouncer
ROUNDS ?= 5
WEB_ROUNDS ?= 5

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

$(BIN)/pytest: pyproject.toml uv.lock | $(UV)
	$(UV) sync --quiet --python "$$(command -v python3)"
	@touch $@

# checkov in an environment of its own (pyproject.toml says why), from the same uv.lock.
$(CHECKOV): pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV)/checkov $(UV) sync --quiet --only-group checkov --python "$$(command -v python3)"
	@touch $@

install: $(BIN)/pytest $(CHECKOV) ## Create .venv with the template's tools

lint: install ## Lint the template's own Python (hooks, tests, extension)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint pgbouncer ## Everything: generation, hooks, and each baked project's own tools on real PostgreSQL
	$(BIN)/pytest

# PgBouncer, for the plumbing's pooler tests (tests/plumbing): apt-get installs it when we may
# (root, or passwordless sudo as on CI runners); otherwise one line says what to install.
pgbouncer:
	@command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo -n); \
	  if command -v apt-get >/dev/null && { [ -z "$$sudo" ] || sudo -n true 2>/dev/null; }; then \
	    echo "Installing PgBouncer (apt-get) for the plumbing's pooler tests (tests/plumbing)"; \
	    $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; \
	  else \
	    echo "The plumbing's pooler tests (tests/plumbing) need PgBouncer: install it (Debian/Ubuntu: sudo apt-get install pgbouncer; macOS: brew install pgbouncer)" >&2; \
	    exit 1; \
	  fi; }

# Shared by demo and bench: bake with the defaults (but a free port) into a fresh scratch
# folder, then the baked README's steps with our uv: install (with the embedded PostgreSQL
# when this machine has none), db (stopped on exit), migrate; then go on in it.
define IN_A_FRESH_BAKE
set -euo pipefail; \
scratch=$$(mktemp -d /tmp/template-$@-XXXXXX); chmod 755 "$$scratch"; \
port=$$($(BIN)/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
$(BIN)/cookiecutter --no-input . --output-dir "$$scratch" db_port=$$port $(BAKE_ARGS) >/dev/null; \
cd "$$scratch/tutorial_service"; \
echo "Baked into $$PWD (PostgreSQL on port $$port)"; \
baked_make() { $(MAKE) --silent --no-print-directory UV="$(UV) --quiet" "$$@"; }; \
baked_make install; \
trap 'baked_make db-stop >/dev/null' EXIT; \
baked_make db migrate;
endef

demo: install ## Bake with defaults, start a local PostgreSQL, migrate, run the demo
	@$(IN_A_FRESH_BAKE) \
	echo "Stored tutorials:"; \
	.venv/bin/python -m tutorial_service

# One bake with the web service serves both: the data layer, then the service over it; the
# exit status says whether every printed target was met.
bench bench-web bench-hostile: BAKE_ARGS = web_framework=fastapi
bench: install ## Benchmark the data layer, then the web service, beside raw asyncpg and the peers' FastAPI pattern
	@$(IN_A_FRESH_BAKE) \
	status=0; \
	.venv/bin/python $(CURDIR)/benchmarks/data_layer.py tutorial_service --rounds $(ROUNDS) || status=$$?; \
	.venv/bin/python $(CURDIR)/benchmarks/web.py tutorial_service --rounds $(WEB_ROUNDS) || status=$$?; \
	exit $$status

bench-web: install ## The web service's benchmark alone
	@$(IN_A_FRESH_BAKE) \
	.venv/bin/python $(CURDIR)/benchmarks/web.py tutorial_service --rounds $(WEB_ROUNDS)

bench-hostile: install ## Hostile clients and a frozen database against the web service: figures
	@$(IN_A_FRESH_BAKE) \
	.venv/bin/python $(CURDIR)/benchmarks/hostile.py tutorial_service

clean: ## Remove the template's .venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
