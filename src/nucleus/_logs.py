"""
How ``nucleus`` commands log: a level and a format (text or JSON lines), from
options or the environment, the same in the supervisor and every worker.

Connection events carry ``socket``, ``user``, ``route`` and ``remote`` as
fields: the JSON format emits them as keys, the text format appends them.
Tokens never appear in a log line (they are not among the fields, and the
handshake's query string is never logged).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Final

__all__ = ["FIELDS", "FORMAT_ENV", "LEVEL_ENV", "JsonFormatter", "configure"]

#: Environment variables giving ``--log-level`` and ``--log-format`` their defaults.
LEVEL_ENV: Final = "NUCLEUS_LOG_LEVEL"
FORMAT_ENV: Final = "NUCLEUS_LOG_FORMAT"

LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("text", "json")

#: Extra fields log records may carry (``logger.info(..., extra={"socket": id})``).
FIELDS: Final = ("socket", "user", "route", "remote", "code")

_TEXT = "%(levelname)s %(name)s [%(process)d]: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name}={getattr(record, name)}" for name in FIELDS
                  if getattr(record, name, None) is not None]
        return f"{line} {' '.join(fields)}" if fields else line


def configure(level: str | None = None, fmt: str | None = None) -> None:
    """
    Log to stderr at ``level`` in ``fmt``; each defaults to its environment
    variable, then ``info`` and ``text``. Raises ValueError for unknown values.
    """
    level = (level or os.environ.get(LEVEL_ENV) or "info").lower()
    fmt = (fmt or os.environ.get(FORMAT_ENV) or "text").lower()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (from --log-level or ${LEVEL_ENV}): "
                         f"use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (from --log-format or ${FORMAT_ENV}): "
                         f"use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(_TEXT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
