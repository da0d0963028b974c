"""
Exceptions raised by the benchmark harness.

::

    BenchError
    ├── BuildError          the load generator did not compile
    ├── ServerUnavailable   a server could not be prepared or did not start
    ├── LoadgenFailed       a load generator run reported an error or timed out
    └── BrokerError         the benchmark's Redis is unreachable or refused a command

A :class:`ServerUnavailable` skips that server and is reported as "not
available"; a :class:`LoadgenFailed` marks one figure as failed and the run
goes on.
"""

from __future__ import annotations

__all__ = ["BenchError", "BrokerError", "BuildError", "LoadgenFailed", "ServerUnavailable"]


class BenchError(Exception):
    """Root of the harness's exceptions."""


class BuildError(BenchError):
    """``cc`` could not build ``loadgen.c``."""


class ServerUnavailable(BenchError):
    """A server's dependencies are missing, or it exited or never listened."""


class LoadgenFailed(BenchError):
    """The load generator exited with an error or ran past its deadline."""


class BrokerError(BenchError):
    """The Redis of ``--redis`` could not be reached, or refused a command."""
