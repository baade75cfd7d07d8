"""Tracing: one trace from an API request through the workflow, its activities
and their Kubernetes calls. Spans are exported over OTLP/HTTP when
CONVEYOR_OTLP_ENDPOINT is set; the trace id is returned to API callers either
way. The worker makes spans only when they are exported."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor

from conveyor.settings import Settings

_urllib3_provider: TracerProvider | None = None


def tracer_provider(service: str, settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{settings.otlp_endpoint.rstrip('/')}/v1/traces")))
    instrument_kubernetes_calls(provider)
    return provider


def instrument_kubernetes_calls(provider: TracerProvider) -> None:
    """The kubernetes client speaks through urllib3: one span per API call.

    urllib3 is instrumented once per process; a process that makes a second
    provider (tests do) moves the instrumentation to the newest one."""
    global _urllib3_provider
    if _urllib3_provider is provider:
        return
    instrumentor = URLLib3Instrumentor()
    if _urllib3_provider is not None:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider)
    _urllib3_provider = provider


def worker_tracer(settings: Settings) -> TracerProvider | None:
    """The worker's spans, or None when no collector is set: nobody could
    read them, and making them (a span and a `traceparent` header for every
    Kubernetes call, spans for every workflow task and activity) cost about a
    seventh of the worker's CPU per release."""
    return tracer_provider("conveyor-worker", settings) if settings.otlp_endpoint else None


def temporal_interceptor(provider: TracerProvider) -> TracingInterceptor:
    return TracingInterceptor(tracer=provider.get_tracer("conveyor.temporal"))


def temporal_interceptors(provider: TracerProvider | None) -> list[TracingInterceptor]:
    """The Temporal tracing interceptor of `provider`; none without one."""
    return [] if provider is None else [temporal_interceptor(provider)]
