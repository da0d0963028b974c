"""
The echo app the Autobahn conformance suite drives (``tests/test_autobahn.py``).

One route, ``/echo``, sends every message back unchanged: text as text,
binary as binary. The limits are raised for the suite's 9.x cases (messages
and frames up to 16 MiB, sent back as fast as they come), the inbound rate
limit is lifted, and keepalive is off so that no ping of ours shows up among
the events a case compares. permessage-deflate is on (cases 12.x and 13.x; on
the native door, since under uvicorn compression is uvicorn's), for every
message whatever its size. Not for anything but the conformance tests.
"""

from nucleus.stream import (
    SocketClosed,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)

#: The largest message of the suite (cases 9.1.6 and 9.2.6) is 16 MiB.
MAX_MESSAGE_SIZE = 16 * 2**20


class Echo(StreamHandler):
    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        try:
            await socket.send(msg)
        except SocketClosed:
            pass  # the peer closed while its message waited: nobody to echo to


def create_app() -> StreamServer:
    server = StreamServer(
        max_message_size=MAX_MESSAGE_SIZE,
        # Case 9.x echoes up to 16 MiB per message, and several may wait in
        # the kernel buffer of a client that reads while it still sends.
        max_send_queue=4 * MAX_MESSAGE_SIZE,
        ping_interval=None,
        serve_client=False,
    )
    # The suite sends 1000 messages back to back (9.7, 9.8, 12.x, 13.x): a
    # message-rate policy is the application's business, not the protocol's.
    #
    # compression_threshold=0 compresses every message, however small. RFC 7692
    # §6 lets a sender leave any message uncompressed (RSV1 unset) in a
    # compressed session, and with the default threshold (512 bytes) we do so
    # for the 16, 64 and 256-byte messages of cases 12.*.1 to 12.*.3 and
    # 13.*.1 to 13.*.3. kosoku 0.1.0 hands such a text message to the case
    # code as ``str`` where it expects ``bytes`` (it hashes the echo with
    # SHA-1), so those cases end as ERROR, "Strings must be encoded before
    # hashing"; binary ones pass. Compressing every message is what these
    # cases mean to test anyway.
    server.route("/echo", Echo(), rate_limit=None, compression=True, compression_threshold=0)
    return server


server = create_app()
