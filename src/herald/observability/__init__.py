"""Logs and metrics: redacted structured logging and per-instance Prometheus metrics."""

from __future__ import annotations

from herald.observability.logging import configure_logging, get_logger, redact_value
from herald.observability.metrics import Metrics

__all__ = ["Metrics", "configure_logging", "get_logger", "redact_value"]
