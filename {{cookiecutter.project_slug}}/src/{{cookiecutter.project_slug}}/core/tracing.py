"""OpenTelemetry for the web service (the `otel` extra): a server span per request and a child
span per SQL statement, holding its text, never its parameters. Imported only when
`observability.tracing_configured()`: without it, nothing of OpenTelemetry is loaded."""

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine


def tracer_provider() -> trace.TracerProvider:
    """The process's provider: the one set already (by `opentelemetry-instrument`, or a
    test), else the SDK's, sending spans in batches over OTLP/HTTP to the endpoint that
    OTEL_EXPORTER_OTLP_ENDPOINT names (service name and resource from OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES)."""
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def instrument(app: FastAPI) -> None:
    """Trace `app`'s requests; its lifespan traces the engine's statements once it built the
    engine (`instrument_engine`)."""
    provider = tracer_provider()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="/health")
    app.state.tracer_provider = provider


def instrument_engine(engine: AsyncEngine, provider: trace.TracerProvider) -> None:
    """Trace `engine`'s statements (once per process)."""
    statements = SQLAlchemyInstrumentor()  # one per process
    if not statements.is_instrumented_by_opentelemetry:
        # The async engine's sync_engine is where SQLAlchemy's events fire; the version check
        # is skipped: the instrumentation lists SQLAlchemy versions older than ours.
        statements.instrument(
            engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
        )
