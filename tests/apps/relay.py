"""A test app: every socket is in "general"; raw clients' text is broadcast there."""

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket

PAGE = b"""<!doctype html>
<ul id="list"></ul>
<script type="module">
  import { connect, Signal, renderList } from "/nucleus/stream.js";
  const messages = new Signal([]);
  window.gaps = [];
  window.states = [];
  const stream = connect(`ws://${location.host}/ws`, { minDelay: 100, maxDelay: 1000 });
  stream.subscribe("general", (m) => messages.modify((list) => list.push(m)));
  stream.on("gap", (gap) => window.gaps.push(gap.channel));
  stream.on("state", (state) => window.states.push(state));
  renderList(messages, document.getElementById("list"), (m) => String(m));
  window.messages = messages;
  window.stream = stream;
</script>
"""


class Relay(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, "general")

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        await hub.broadcast_to_room("general", msg, exclude=socket.id)


def create_app() -> StreamServer:
    server = StreamServer()
    server.route("/ws", Relay())
    server.static("/", PAGE, "text/html; charset=utf-8")
    return server


server = create_app()
