"""The HTTP service: `uvicorn <package>.web:app`, or `create_app()` for another configuration."""

from fastapi import FastAPI

from . import routes
from .core.logs import configure_logging
from .core.web import PROBLEMS, install, lifespan
from .settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service, configured by `settings` (default: the environment and `.env`)."""
    settings = settings or get_settings()
    app = FastAPI(title="Tutorials", lifespan=lifespan(settings), responses=PROBLEMS)
    install(app, settings)  # error answers, HEAD, body limits, request ids, metrics, traces
    app.include_router(routes.router)
    return app


app: FastAPI  # `uvicorn <package>.web:app`: built on first access (below)


def __getattr__(name: str) -> FastAPI:
    """`app`, built from the settings when first asked for, so that importing this module
    needs no settings. Logging is configured here, not in create_app(): uvicorn logs in our
    format from its first request on, while the apps that tests create leave the test
    runner's logging alone."""
    global app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    configure_logging(get_settings())
    app = create_app()
    return app
