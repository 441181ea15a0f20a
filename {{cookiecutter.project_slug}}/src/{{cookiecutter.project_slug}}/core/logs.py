"""One logging set-up for the app, SQLAlchemy and uvicorn: readable text on a terminal, one
JSON object per line for a log collector. Every line written while serving a request carries
its id, and the trace id when OpenTelemetry is in use. Slow statements are logged with their
text and duration, never their parameters."""

import json
import logging
import logging.config
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from ..settings import Settings

# The id of the request being served ("" outside one): the web service sets it per request;
# every log line reads it, the data layer's included (contextvars cross SQLAlchemy's greenlet
# bridge).
request_id: ContextVar[str] = ContextVar("request_id", default="")

logger = logging.getLogger(__name__)

# A LogRecord's own attributes; any other came with `extra=` and is a field of the JSON line.
# (uvicorn's `color_message` repeats the message with terminal colours.)
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
    "request_id",
    "trace_id",
}
# Where a context's start time goes (see log_slow_statements).
STATEMENT_STARTED = "_slow_statement_started"


def current_trace_id() -> str:
    """The current span's trace id, where OpenTelemetry was imported and a span is open, else ""
    (never imports it: without tracing this costs one dictionary lookup)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return ""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


class RequestContext(logging.Filter):
    """Stamps each record with the request id and trace id, where there are ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        if identifier := request_id.get():
            record.request_id = identifier
        if trace_id := current_trace_id():
            record.trace_id = trace_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, request_id, trace_id,
    every `extra=` field (method, route, status, duration_ms, sqlstate, ...), exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "trace_id"):
            if value := getattr(record, name, ""):
                line[name] = value
        line |= {k: v for k, v in vars(record).items() if k not in RECORD_ATTRIBUTES}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message`, for a terminal."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
            defaults={"request_id": "-"},
        )


def logging_config(settings: Settings, stream: TextIO | None = None) -> dict[str, Any]:
    """The `logging.config.dictConfig` of the whole process, for `configure_logging()` or
    uvicorn (`uvicorn.Config(log_config=...)`): one handler on the root logger, writing to
    `stream` (stderr), which uvicorn's and SQLAlchemy's lines reach too."""
    stream = stream or sys.stderr
    json_lines = settings.log_format == "json" or (
        settings.log_format == "auto" and not stream.isatty()
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestContext}},
        "formatters": {"default": {"()": JsonFormatter if json_lines else TextFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "formatter": "default",
                "filters": ["request"],
                # uvicorn's loggers keep their own level (--log-level): this one bounds all.
                "level": settings.log_level,
            }
        },
        "root": {"handlers": ["default"], "level": settings.log_level},
        "loggers": {
            # uvicorn's own handlers go; its lines reach ours through the root logger.
            "uvicorn": {"handlers": [], "propagate": True},
            # The service writes its own access line (method, route, status, duration,
            # request id); uvicorn's, with none of route, duration or id, stays off: a logger
            # without handlers is skipped by uvicorn at no cost.
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure_logging(settings: Settings) -> None:
    """Configure the process's logging from LOG_FORMAT and LOG_LEVEL (see logging_config)."""
    logging.config.dictConfig(logging_config(settings))


def log_slow_statements(engine: AsyncEngine, threshold_ms: float) -> None:
    """Log each statement on `engine` that took `threshold_ms` or longer: its duration and
    text, never its parameters. With 0, nothing is registered: no cost."""
    if threshold_ms <= 0:
        return

    def started(*arguments: Any) -> None:
        context = arguments[4]  # (connection, cursor, statement, parameters, context, many)
        if context is not None:
            setattr(context, STATEMENT_STARTED, time.perf_counter())

    def finished(*arguments: Any) -> None:
        statement, context = arguments[2], arguments[4]
        began = getattr(context, STATEMENT_STARTED, None)
        if began is None:
            return
        elapsed_ms = (time.perf_counter() - began) * 1000
        if elapsed_ms >= threshold_ms:
            duration = round(elapsed_ms, 1)
            logger.warning(
                "slow statement, %.1f ms: %s", duration, statement, extra={"duration_ms": duration}
            )

    event.listen(engine.sync_engine, "before_cursor_execute", started)
    event.listen(engine.sync_engine, "after_cursor_execute", finished)
