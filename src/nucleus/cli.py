"""
The ``nucleus`` command: ``serve`` an app, run the ``demo``, print a ``token``,
export an app's message ``types``.

Only argument parsing and wiring live here; everything it runs is importable.
A configuration error (a bad option, an app that cannot be found, a backend
that cannot serve many workers) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ._loader import load_app
from ._logs import FORMAT_ENV, FORMATS, LEVEL_ENV, LEVELS
from ._logs import configure as configure_logging
from .stream import ConfigError, StreamError
from .stream._backend import BACKEND_ENV

__all__ = ["WORKERS_ENV", "load_app", "main"]

#: Environment variable giving ``nucleus serve --workers`` its default.
WORKERS_ENV = "NUCLEUS_WORKERS"

#: Seconds the supervisor gives workers to drain, beyond the app's own timeouts.
DRAIN_MARGIN = 5.0


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _workers(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes >= 1 (from --workers or ${WORKERS_ENV}), "
            f"got {value!r}")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {value!r}")
    return number


def _parser() -> _Parser:
    parser = _Parser(prog="nucleus", description="Nucleus Stream")
    parser.add_argument("--version", action="version", version=f"nucleus-stream {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    serve = commands.add_parser(
        "serve", help="serve a StreamServer given as module:attr", formatter_class=formatter,
        description="Serve a StreamServer. SIGTERM or SIGINT drains: every socket is "
                    "closed with 1001, then the command exits 0.")
    serve.add_argument("app", help="module:attribute of a StreamServer, e.g. app:server")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=3000,
                       help="port to listen on; 0 picks a free one (default: 3000)")
    serve.add_argument(
        "--workers", type=_workers, metavar="N", default=os.environ.get(WORKERS_ENV, "1"),
        help=f"worker processes sharing the port (SO_REUSEPORT), restarted if they die; "
             f"more than 1 needs a shared --backend (default: ${WORKERS_ENV}, else 1)")
    serve.add_argument(
        "--backend", metavar="URL", default=None,
        help=f"backend shared by every process, e.g. redis://127.0.0.1:6379/0?prefix=myapp "
             f"(default: ${BACKEND_ENV}, else the app's own, memory:// unless it says)")
    serve.add_argument(
        "--log-level", choices=LEVELS, type=str.lower,
        default=os.environ.get(LEVEL_ENV, "info").lower(),
        help=f"least severe messages logged; info logs one line per connection event "
             f"(default: ${LEVEL_ENV}, else info)")
    serve.add_argument(
        "--log-format", choices=FORMATS, type=str.lower,
        default=os.environ.get(FORMAT_ENV, "text").lower(),
        help=f"text, or json: one JSON object per line (default: ${FORMAT_ENV}, else text)")
    serve.add_argument(
        "--reuse-port", action="store_true",
        help="set SO_REUSEPORT, so that other processes may listen on the same port; "
             "always on with --workers > 1 (default: off)")

    demo = commands.add_parser(
        "demo", help="serve the demo apps (chat, notifications, dashboard, sign-in) at "
                     "http://127.0.0.1:3000/")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=3000,
                      help="port to listen on (default: 3000)")

    token = commands.add_parser("token", help="print a development token signed with SECRET_KEY")
    token.add_argument("user_id", help="the user the token names")
    token.add_argument("--expires-in", type=float, default=3600.0,
                       help="seconds until the token expires (default: 3600)")

    types = commands.add_parser(
        "types", help="export the routes' message models as TypeScript or JSON Schema",
        formatter_class=formatter,
        description="Export the message models declared on the app's routes\n"
                    "(route(..., message_model=Model): msgspec Structs, dataclasses, pydantic\n"
                    "models), so that a page and its server share one definition. Each type\n"
                    "is named after its model's class.\n\n"
                    "  nucleus types app:server --out static/messages.d.ts\n"
                    "  nucleus types app:server --format json-schema --out messages.schema.json")
    types.add_argument("app", help="module:attribute of a StreamServer, e.g. app:server")
    types.add_argument(
        "--format", choices=("ts", "json-schema"), default="ts",
        help="ts: TypeScript declarations, one exported type per model; json-schema: one "
             "JSON Schema (2020-12) document, every model under $defs (default: ts)")
    types.add_argument("--out", metavar="FILE", default=None,
                       help="write to FILE instead of standard output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            return _serve(args)
        except ConfigError as exc:
            parser.exit(2, f"nucleus serve: error: {exc}\n")
        except StreamError as exc:  # e.g. the backend is unreachable at startup
            parser.exit(1, f"nucleus serve: error: {exc}\n")
        except OSError as exc:  # e.g. the port is taken
            parser.exit(2, f"nucleus serve: error: cannot listen on {args.host}:{args.port}: "
                        f"{exc.strerror or exc}\n")
    elif args.command == "types":
        try:
            return _types(args)
        except ConfigError as exc:
            parser.exit(2, f"nucleus types: error: {exc}\n")
    elif args.command == "token":
        from .fortress import SECRET_ENV, Fortress

        secret = os.environ.get(SECRET_ENV)
        if not secret:
            raise SystemExit(f"{SECRET_ENV} is not set: export a random secret of at least "
                             "32 bytes, e.g. SECRET_KEY=$(openssl rand -hex 32)")
        try:
            print(Fortress.issue_token(args.user_id, secret, expires_in=args.expires_in))
        except StreamError as exc:
            raise SystemExit(str(exc)) from None
    elif args.command == "demo":
        from .demo import create_app

        print(f"Demo apps: open http://{args.host}:{args.port}/ in a browser", flush=True)
        create_app().run(host=args.host, port=args.port)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nucleus-stream")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _serve(args: argparse.Namespace) -> int:
    # The workers inherit the environment: they log the same way.
    os.environ[LEVEL_ENV], os.environ[FORMAT_ENV] = args.log_level, args.log_format
    configure_logging(args.log_level, args.log_format)
    # The app is imported here too (each worker imports it again): a wrong name,
    # a bad backend URL or a backend the workers cannot share fails at once, once.
    app = load_app(args.app)
    if args.backend is not None:
        app.use_backend(args.backend)
    if args.workers == 1:
        app.run(host=args.host, port=args.port, reuse_port=args.reuse_port)
        return 0
    if app.hub.backend.single_node:
        raise ConfigError(
            f"--workers {args.workers} needs a backend the workers share: add --backend "
            f"redis://host:port/db (or set ${BACKEND_ENV}); with the memory backend each "
            "worker would see only its own sockets")
    from ._supervisor import WorkerConfig, supervise

    config = WorkerConfig(args.app, args.host, args.port, args.backend)
    drain = app.limits.close_timeout + app.shutdown_timeout + DRAIN_MARGIN
    return supervise(config, args.workers, graceful_timeout=drain)


def _types(args: argparse.Namespace) -> int:
    from ._schema import message_schema, route_models
    from ._typegen import typescript

    models = route_models(load_app(args.app))
    if not models:
        raise ConfigError(f"no route of {args.app} declares a message_model: nothing to export "
                          "(route(path, handler, message_model=Model))")
    document = message_schema(models, title=f"Message models of {args.app}")
    if args.format == "json-schema":
        text = json.dumps(document, indent=2) + "\n"
    else:
        try:
            text = typescript(document, header=[
                f"Message models of {args.app}, as TypeScript types.",
                f"Generated by `nucleus types {args.app}`: edit the models, not this file.",
            ])
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
