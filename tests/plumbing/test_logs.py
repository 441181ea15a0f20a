"""The log: one JSON object per line with the request id, readable text on a terminal, slow
statements with their duration and text but never their parameters."""

import io
import logging
from collections.abc import Callable

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.project_slug }}.core import database
from {{ cookiecutter.project_slug }}.core.logs import logging_config, request_id
from {{ cookiecutter.project_slug }}.settings import Settings

from .captured_logs import captured_logs
from .conftest import settings_for


def test_json_lines_carry_the_request_id_and_extra_fields() -> None:
    """A line logged while a request id is bound has it, and its `extra` fields, in JSON."""
    with captured_logs(Settings(log_format="json")) as logs:  # type: ignore[call-arg]
        token = request_id.set("abc-123")
        try:
            logging.getLogger("anywhere").warning("saved %d", 3, extra={"rows": 3})
        finally:
            request_id.reset(token)
        logging.getLogger("anywhere").info("outside a request")
    inside, outside = logs.lines()
    assert inside["message"] == "saved 3"
    assert (inside["level"], inside["logger"], inside["rows"]) == ("WARNING", "anywhere", 3)
    assert inside["request_id"] == "abc-123"
    assert "request_id" not in outside


def test_log_level_bounds_every_logger() -> None:
    """LOG_LEVEL=warning (any case) drops INFO lines, uvicorn's included."""
    with captured_logs(Settings(log_format="json", log_level="warning")) as logs:  # type: ignore[call-arg, arg-type]
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("anywhere").info("dropped")
        logging.getLogger("anywhere").error("kept")
    assert [line["message"] for line in logs.lines()] == ["kept"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("log_format", "json_lines"), [("auto", False), ("json", True)])
def test_a_terminal_gets_text_unless_json_is_asked(log_format: str, json_lines: bool) -> None:
    """LOG_FORMAT=auto writes text to a terminal; json writes JSON to it all the same."""
    terminal = Terminal()
    config = logging_config(Settings(log_format=log_format), terminal)  # type: ignore[call-arg, arg-type]
    formatter = config["formatters"]["default"]["()"]
    assert formatter.__name__ == ("JsonFormatter" if json_lines else "TextFormatter")


def test_a_text_line_shows_time_level_logger_request_id_and_message() -> None:
    """`time LEVEL logger [request id] message`, `-` outside a request."""
    with captured_logs(Settings(log_format="text")) as logs:  # type: ignore[call-arg]
        logging.getLogger("anywhere").warning("no request here")
    assert logs.text().rstrip().endswith("WARNING anywhere [-] no request here")


@pytest.mark.parametrize(("name", "value"), [("log_level", "verbose"), ("log_format", "xml")])
def test_a_wrong_log_setting_is_refused_by_name(name: str, value: str) -> None:
    """LOG_LEVEL and LOG_FORMAT take only their listed values; the error names the field."""
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})  # type: ignore[arg-type]


async def test_a_slow_statement_is_logged_with_its_duration_and_no_parameters(
    bind_get_session: Callable[..., AsyncEngine],
) -> None:
    """With DATABASE_SLOW_STATEMENT_MS=100, a 0.2 s statement is logged (with the request id
    bound at the time) and a fast one is not; no line holds a parameter's value."""
    settings = settings_for(database.get_engine().url, database_slow_statement_ms=100)
    bind_get_session(settings)
    secret = "parameter-value-never-logged"
    with captured_logs(Settings(log_format="json")) as logs:  # type: ignore[call-arg]
        token = request_id.set("slow-1")
        try:
            async with database.get_session() as session:
                await session.execute(text("SELECT :fast"), {"fast": secret})
                await session.execute(
                    text("SELECT pg_sleep(:seconds), :secret"), {"seconds": 0.2, "secret": secret}
                )
        finally:
            request_id.reset(token)
    lines = logs.lines()
    assert secret not in logs.text()
    (slow,) = [line for line in lines if "slow statement" in line["message"]]
    assert "pg_sleep" in slow["message"]
    assert slow["duration_ms"] >= 200
    assert slow["request_id"] == "slow-1"


async def test_slow_statements_off_by_default_cost_no_listener() -> None:
    """DATABASE_SLOW_STATEMENT_MS=0 (the default) registers nothing on the engine."""
    engine = database.create_engine(settings_for(database.get_engine().url))
    try:
        dispatch = engine.sync_engine.dispatch
        assert not dispatch.before_cursor_execute
        assert not dispatch.after_cursor_execute
    finally:
        await engine.dispose()
