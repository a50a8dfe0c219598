"""Log output: human-readable lines by default, JSON lines by a setting; request ids.

The interceptor puts each RPC's request id in :data:`REQUEST_ID` (a context
variable of the thread answering it); a filter copies it onto every log record,
so every line logged while an RPC is answered names it (``-`` elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from contextvars import ContextVar

__all__ = [
    "LOG_FORMATS",
    "REQUEST_ID",
    "JsonFormatter",
    "RequestIdFilter",
    "log_handler",
    "route_library_logs",
]

LOG_FORMATS = ("text", "json")
REQUEST_ID: ContextVar[str] = ContextVar("vidseek_request_id", default="-")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the RPC being answered, or ``-``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def log_handler(fmt: str = "text", stream: object = None) -> logging.Handler:
    """A stderr (or ``stream``) handler in ``fmt`` (:data:`LOG_FORMATS`), with request ids."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    return handler


def route_library_logs() -> None:
    """Send transformers' and huggingface_hub's records through the root handler only.

    Each library installs a stderr handler of its own; huggingface_hub's also
    propagates to the root, so each of its warnings came out twice, once without
    the request id and the chosen format.
    """
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_default_handler()
        transformers_logging.enable_propagation()
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.get_logger()  # configures the library's logger (adds its handler)
        library = logging.getLogger("huggingface_hub")
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
