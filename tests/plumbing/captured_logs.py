"""The process's logging as the project configures it, into a buffer, restored afterwards."""

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from {{ cookiecutter.project_slug }}.core.logs import logging_config
from {{ cookiecutter.project_slug }}.settings import Settings

# The loggers logging_config() changes beside the root.
CONFIGURED = ("uvicorn", "uvicorn.access")


class CapturedLogs:
    def __init__(self, settings: Settings) -> None:
        self.stream = io.StringIO()
        # For uvicorn.Config(log_config=...), as a `serve` entry point passes it.
        self.config = logging_config(settings, self.stream)

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far, each parsed as one JSON object."""
        return [json.loads(line) for line in self.text().splitlines()]


@contextmanager
def captured_logs(settings: Settings) -> Iterator[CapturedLogs]:
    """Logging configured by `logging_config(settings)`, writing into a buffer; the test
    runner's own handlers and levels are back afterwards."""
    root = logging.getLogger()
    saved = [(root, root.handlers[:], root.level, root.propagate)]
    saved += [
        (logger, logger.handlers[:], logger.level, logger.propagate)
        for logger in map(logging.getLogger, CONFIGURED)
    ]
    captured = CapturedLogs(settings)
    logging.config.dictConfig(captured.config)
    try:
        yield captured
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
