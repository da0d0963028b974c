"""
The ``nucleus`` command: ``serve`` an app, run the ``demo``.

Only argument parsing and wiring live here; everything it runs is importable.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .stream import StreamServer

__all__ = ["load_app", "main"]


def load_app(spec: str) -> StreamServer:
    """Import ``module:attr`` (like uvicorn) and return the :class:`StreamServer` there."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"expected module:attribute (e.g. app:server), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"cannot import {module_name!r}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, StreamServer):
        raise SystemExit(f"{spec} is a {type(app).__name__}, not a StreamServer")
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nucleus", description="Nucleus Stream")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a StreamServer given as module:attr")
    serve.add_argument("app", help="module:attribute of a StreamServer, e.g. app:server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)

    demo = commands.add_parser("demo", help="serve the chat demo at http://127.0.0.1:3000/")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=3000)

    token = commands.add_parser("token", help="print a development token signed with SECRET_KEY")
    token.add_argument("user_id")
    token.add_argument("--expires-in", type=float, default=3600.0, help="seconds (3600)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        load_app(args.app).run(host=args.host, port=args.port)
    elif args.command == "token":
        from .fortress import SECRET_ENV, Fortress
        from .stream import StreamError

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

        print(f"Chat demo: open http://{args.host}:{args.port}/ in a browser", flush=True)
        create_app().run(host=args.host, port=args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
