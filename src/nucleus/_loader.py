"""
Finding the app a command line names: ``module:attribute``, as uvicorn does.

Shared by ``nucleus serve`` and by each ``--workers`` process, which imports the
app again itself. A name that leads nowhere is a :class:`ConfigError` saying
which part is wrong; nothing here starts or connects anything.
"""

from __future__ import annotations

import importlib
import os
import sys

from .stream import ConfigError, StreamServer

__all__ = ["load_app"]


def load_app(spec: str) -> StreamServer:
    """Import ``module:attr`` (like uvicorn) and return the :class:`StreamServer` there."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"expected module:attribute (e.g. app:server), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, StreamServer):
        raise ConfigError(f"{spec} is a {type(app).__name__}, not a StreamServer")
    return app
