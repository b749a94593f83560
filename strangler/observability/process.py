"""One call at a process's entry point: its log lines and its tracer, from the settings."""

from __future__ import annotations

from strangler.observability.logs import configure_logging
from strangler.observability.settings import ObservabilitySettings
from strangler.observability.tracing import configure_tracing

__all__ = ["observe_process"]


def observe_process(service: str) -> ObservabilitySettings:
    """Configure logging and tracing for this process as `service`; return the settings."""
    settings = ObservabilitySettings()
    configure_logging(service, settings)
    configure_tracing(service, settings)
    return settings
