"""Reading Prometheus text the way a scraper would."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric_value(text: str, sample: str, **labels: str) -> float | None:
    """The value of the sample named `sample` with exactly these labels, or None."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return float(found.value)
    return None
