# The web service's tasks, included by the Makefile (this file exists with web_framework=fastapi).
.PHONY: run deploy
HOST ?= 127.0.0.1
PORT ?= 8000

run: ## Start a development server that reloads on code changes (HOST=127.0.0.1 PORT=8000)
	$(BIN)uvicorn {{ cookiecutter.project_slug }}.web:app --reload --host $(HOST) --port $(PORT)

deploy: ## Release on the compose stack: build, migrate, replace the replicas one at a time
	sh scripts/deploy.sh
