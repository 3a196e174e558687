"""Traces with OpenTelemetry: off unless ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``.

When on, every request is a server span (the Flask instrumentation) that
continues the caller's W3C ``traceparent`` and is named after its route; Redis
commands and MongoDB commands are its children; and the ``order.placed``
CloudEvent carries the trace context as ``traceparent`` / ``tracestate``
attributes (the CloudEvents distributed-tracing extension). SQLite is not
instrumented: the maintained sqlite3 instrumentation traces only cursors, and
the store runs its statements on the connection, so it would add a proxy to
every call and not one span.

Everything else comes from the standard variables, read by the SDK itself:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the rest of ``OTEL_EXPORTER_OTLP_*``),
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (the default service name
is ``flashsale-FUNCTION``), ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_SDK_DISABLED``. When off, nothing here is imported beyond the API, and
no span is made.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import propagate, trace

from shared.settings import Settings

# Probes and scrapes every few seconds would bury the requests worth reading.
UNTRACED_URLS = "healthz,readyz,metrics"

_configured_pid = 0


def enabled(settings: Settings) -> bool:
    return settings.otel_traces_exporter in {"otlp", "console"}


def configure(settings: Settings, function: str, app: Any = None) -> bool:
    """Install the tracer provider and the instrumentations, once per process; trace ``app`` (a Flask app).

    Returns whether tracing is on.
    """
    global _configured_pid
    if not enabled(settings):
        return False
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if _configured_pid != os.getpid():
        _configured_pid = os.getpid()
        resource = Resource.create({})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: f"flashsale-{function}"}))
        provider = TracerProvider(resource=resource)
        # Batched: spans leave on a background thread, never on the request path.
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
        trace.set_tracer_provider(provider)
        RedisInstrumentor().instrument(tracer_provider=provider)
        PymongoInstrumentor().instrument(tracer_provider=provider)
    if app is not None:
        FlaskInstrumentor.instrument_app(app, tracer_provider=trace.get_tracer_provider(), excluded_urls=UNTRACED_URLS)  # type: ignore[no-untyped-call]
    return True


def _exporter(settings: Settings) -> Any:
    if settings.otel_traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # One JSON object a line, like the logs.
        return ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def name_span(method: str, route: str, status: int, elapsed: float) -> None:
    """A router observer: name the request's span after its route (functions-framework's Flask rule is a catch-all)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


def carry_trace_context(event: Any) -> None:
    """An EventEmitter hook: put the current trace context on a CloudEvent before it is queued."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for key in ("traceparent", "tracestate"):
        if carrier.get(key):
            event[key] = carrier[key]
