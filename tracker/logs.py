"""configure_logging(): the only structlog.configure() call. JSON off a TTY, console on one."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from structlog.typing import Processor

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        return msgspec.json.encode(obj, enc_hook=default)
    except (msgspec.EncodeError, UnicodeEncodeError):  # a lone surrogate (undecodable bytes)
        return json.dumps(obj, default=default or repr).encode()  # escapes it: \udcxx


def _dumps_text(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    return _dumps(obj, default).decode()


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog; ``fmt`` is auto (console on a TTY, else JSON), json or console."""
    console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exceptions = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )
    if console:
        processors: list[Processor] = [*shared, structlog.dev.ConsoleRenderer()]
        factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors = [*shared, exceptions, structlog.processors.JSONRenderer(serializer=_dumps)]
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=processors,
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )
    # Libraries' stdlib records (aiohttp's "Unhandled exception", asyncio's) in the same shape,
    # a traceback included: a plain-text traceback would break a JSON log's one line per record
    renderer: Processor = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps_text)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *(() if console else (exceptions,)),  # the exception as a dict, in JSON
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, _LEVELS[level]))  # libraries' info is not ours to log
