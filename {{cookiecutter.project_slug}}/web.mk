# The web service's tasks, included by the Makefile (this file exists with web_framework=fastapi).
.PHONY: run

run: ## Start the development server on http://127.0.0.1:8000, reloading on code changes
	$(BIN)uvicorn {{ cookiecutter.project_slug }}.web:app --reload
