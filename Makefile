# The template's task runner. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := bash
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install test lint demo bench bench-web clean
ROUNDS ?= 5
WEB_ROUNDS ?= 3

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/pytest: pyproject.toml
	$(UV) sync --quiet --python "$$(command -v python3)"
	@touch $@

install: $(BIN)/pytest ## Create .venv with the template's tools

lint: install ## Lint the template's own Python (hooks, tests, extension)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint ## Everything: generation, hooks, and each baked project's own tools on real PostgreSQL
	$(BIN)/pytest

# Shared by demo and bench: bake with the defaults (but a free port) into a fresh scratch
# folder, install it, start its own PostgreSQL (stopped on exit), migrate; then go on in it.
define IN_A_FRESH_BAKE
set -euo pipefail; \
scratch=$$(mktemp -d /tmp/template-$@-XXXXXX); chmod 755 "$$scratch"; \
port=$$($(BIN)/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
$(BIN)/cookiecutter --no-input . --output-dir "$$scratch" db_port=$$port $(BAKE_ARGS) >/dev/null; \
cd "$$scratch/tutorial_service"; \
echo "Baked into $$PWD (PostgreSQL on port $$port)"; \
$(UV) sync --quiet --python "$$(command -v python3)"; \
trap '.venv/bin/python scripts/local_postgres.py stop >/dev/null' EXIT; \
.venv/bin/python scripts/local_postgres.py start; \
.venv/bin/alembic upgrade head;
endef

demo: install ## Bake with defaults, start a local PostgreSQL, migrate, run the demo
	@$(IN_A_FRESH_BAKE) \
	echo "Stored tutorials:"; \
	.venv/bin/python -m tutorial_service

bench: install ## Benchmark the baked data layer side by side (prints a Markdown table)
	@$(IN_A_FRESH_BAKE) \
	.venv/bin/python $(CURDIR)/benchmarks/data_layer.py tutorial_service --rounds $(ROUNDS)

bench-web: BAKE_ARGS = web_framework=fastapi
bench-web: install ## Benchmark the baked web service against raw asyncpg (prints a Markdown table)
	@$(IN_A_FRESH_BAKE) \
	.venv/bin/python $(CURDIR)/benchmarks/web.py tutorial_service --rounds $(WEB_ROUNDS)

clean: ## Remove the template's .venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
