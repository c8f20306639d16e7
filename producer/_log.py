"""The SDK's structlog logger, without configuring structlog.

The SDK runs inside someone else's process, so it never calls
``structlog.configure``.  While the application has not configured structlog either,
messages go to stderr (structlog's own default is stdout, where they would mix with
the training script's output); once it has, they follow the application's setup.
"""

from __future__ import annotations

import sys
from typing import cast

import structlog
from structlog.typing import FilteringBoundLogger

__all__ = ["sdk_logger"]


def sdk_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger named ``name``."""
    # structlog's factories return lazy proxies typed Any; they behave as the
    # filtering bound logger of the default (or the application's) configuration.
    if structlog.is_configured():
        return cast("FilteringBoundLogger", structlog.get_logger(name))
    return cast("FilteringBoundLogger", structlog.wrap_logger(structlog.WriteLogger(sys.stderr), logger_name=name))
