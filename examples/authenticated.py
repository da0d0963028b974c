"""The guide's Authenticated WebSocket Connection: check the token in on_connect.

Run: SECRET_KEY=... nucleus serve examples.authenticated:server
Get a token: SECRET_KEY=... nucleus token alice
(Checking at the door instead, with ``auth=Fortress.query_token()``, refuses bad
tokens with HTTP 401 before any socket opens; see docs/security.md.)
"""

import os

from nucleus.fortress import Fortress
from nucleus.stream import StreamHandler, StreamHub, StreamServer, WebSocket


class Notifications(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        # Validate token from query string
        token = socket.query.get("token")
        if token is not None:
            secret = os.environ.get("SECRET_KEY", "")
            user_id = Fortress.extract_user_id(token, secret)
            if user_id is not None:
                # Authenticated - join user-specific room
                await hub.identify(socket.id, user_id)
                await hub.join_room(socket.id, f"user:{user_id}")
                return
        # Reject unauthenticated connection (closes with 1008)
        await hub.disconnect(socket.id)


server = StreamServer()
server.route("/ws/notifications", Notifications())

if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
