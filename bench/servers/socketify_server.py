"""Benchmark peer: socketify.py, Python bindings to uWebSockets (C++).

Subscribers on ``/sub`` subscribe to topic ``bench``; every text message
received on ``/pub`` is published to the topic with ``app.publish()``, uWS's
built-in pub/sub (the publisher is not subscribed, so nothing is echoed).
Stops on SIGTERM (default action) or SIGINT.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from typing import Any

from socketify import App, CompressOptions, OpCode  # type: ignore[import-untyped]

TOPIC = "bench"


def serve(port: int) -> None:
    app = App()

    def on_sub_open(ws: Any) -> None:
        ws.subscribe(TOPIC)

    def on_pub_message(ws: Any, message: str | bytes, opcode: OpCode) -> None:
        app.publish(TOPIC, message, OpCode.TEXT)

    def ignore(*_: Any) -> None:
        return None

    common: dict[str, Any] = {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 1 << 20,
        "idle_timeout": 120,
        "send_pings_automatically": True,
        # uWS skips a subscriber whose backlog exceeds this; make it large
        # enough that the benchmark never loses a message to it.
        "max_backpressure": 64 << 20,
    }
    app.ws("/sub", {**common, "open": on_sub_open, "message": ignore})
    app.ws("/pub", {**common, "message": on_pub_message})
    app.listen(
        {"port": port, "host": "127.0.0.1"},
        lambda config: print(f"listening on {port}", flush=True),
    )
    app.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    print(f"socketify {version('socketify')}", flush=True)
    serve(args.port)
