"""Observability shared by every process of the system: settings, request context, structured
logs, OpenTelemetry tracing and the apps' Prometheus metrics.

Each part is its own module so that an app takes only what it needs (the proxy keeps its own
metrics and request path, and uses the context, logs and tracing set-up from here).
"""
