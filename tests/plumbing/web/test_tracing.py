"""OpenTelemetry, opt-in: configured, a request is a server span with a child span per SQL
statement (its text, never its parameters); not configured, nothing of it is imported."""

import os
import subprocess
import sys

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from {{ cookiecutter.project_slug }}.settings import Settings
from {{ cookiecutter.project_slug }}.web import create_app

from ..captured_logs import captured_logs
from ..servers import PROJECT_ROOT
from .test_web_server import serving

PACKAGE = "{{ cookiecutter.project_slug }}"
OTEL_EXTRA = ("sdk", "exporter", "instrumentation")


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider, keeping finished spans in memory (set once: OpenTelemetry
    allows one provider per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.mark.commits
async def test_a_post_is_a_server_span_with_a_child_span_holding_the_insert(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, POST /tutorials is a server span, the INSERT a
    span inside it with the statement's text and no parameter; its log lines carry the trace
    id."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    settings = Settings(log_format="json")  # type: ignore[call-arg]
    name = "a traced name, never in a span"
    with captured_logs(settings) as logs:
        async with (
            serving(create_app(settings), log_config=logs.config) as base_url,
            httpx.AsyncClient(base_url=base_url) as client,
        ):
            created = await client.post("/tutorials", json={"name": name})
    assert created.status_code == 201
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /tutorials"]
    by_id = {s.context.span_id: s for s in spans}

    def inside_server(span: object) -> bool:
        while (parent := getattr(span, "parent", None)) is not None:
            if parent.span_id == server.context.span_id:
                return True
            span = by_id.get(parent.span_id)
        return False

    statements = [s for s in spans if "db.statement" in (s.attributes or {}) and inside_server(s)]
    inserts = [
        s for s in statements if str((s.attributes or {})["db.statement"]).startswith("INSERT")
    ]
    assert len(inserts) == 1
    for span in statements:
        assert name not in str(dict(span.attributes or {}))
    trace_id = format(server.context.trace_id, "032x")
    access = [line for line in logs.lines() if line["logger"] == f"{PACKAGE}.access"]
    assert [line["trace_id"] for line in access] == [trace_id]


def test_without_otel_variables_nothing_of_the_otel_extra_is_imported() -> None:
    """No OTEL_EXPORTER_OTLP_ENDPOINT: neither the SDK, an exporter nor an instrumentation is
    imported (FastAPI itself imports OpenTelemetry's API, a dependency of recent versions)."""
    loaded = (f"{PACKAGE}.tracing", *(f"opentelemetry.{part}" for part in OTEL_EXTRA))
    probe = (
        f"import sys, {PACKAGE}.web; "
        f"print(sorted(name for name in sys.modules if name.startswith({loaded!r})))"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
