"""Authentication over real sockets: the guide's pattern, live expiry, refresh, revocation."""

from __future__ import annotations

import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from examples import authenticated
from nucleus.fortress import Fortress, RevocationList
from nucleus.stream import ChannelError, SocketMessage, StreamHub, StreamServer, WebSocket

from .conftest import Serve
from .helpers import Recorder, within
from .tagged_client import TaggedClient

pytestmark = pytest.mark.usefixtures("any_backend")

SECRET = "k" * 32


async def test_guide_pattern_refuses_in_on_connect_with_1008(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET)
    base = await serve(authenticated.server)
    for url in (f"{base}/ws/notifications", f"{base}/ws/notifications?token=forged"):
        async with connect(url) as refused:
            with pytest.raises(ConnectionClosed) as closed:
                await within(refused.recv())
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    token = Fortress.issue_token("alice", SECRET)
    async with connect(f"{base}/ws/notifications?token={token}") as alice:
        hub = authenticated.server.hub
        await hub.send_to_user("alice", SocketMessage.json({"note": "hi"}))
        assert json.loads(await within(alice.recv())) == {"note": "hi"}
        assert await hub.online_users() == ["alice"]
        (socket_id,) = await hub.room_members("user:alice")
        assert hub.get_socket(socket_id).user_id == "alice"


async def test_user_rooms_admit_only_their_user(serve: Serve) -> None:
    attempts: list[str] = []

    class Nosy(Recorder):
        async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
            await hub.identify(socket.id, "mallory")
            try:
                await hub.join_room(socket.id, "user:alice")
            except ChannelError as exc:
                attempts.append(str(exc))
            await hub.join_room(socket.id, "user:mallory")
            await super().on_connect(hub, socket)

    server = StreamServer()
    server.route("/ws", Nosy())
    base = await serve(server)
    async with connect(f"{base}/ws") as client:
        await within(server.routes["/ws"].handler.connected.get())  # type: ignore[attr-defined]
        await server.hub.broadcast_to_room("user:alice", SocketMessage.Text("private"))
        await server.hub.broadcast_to_room("user:mallory", SocketMessage.Text("yours"))
        assert await within(client.recv()) == "yours"
    assert len(attempts) == 1 and "private user room" in attempts[0]


async def test_live_token_expiry_closes_4001_unless_refreshed(serve: Serve) -> None:
    server = StreamServer()
    handler = Recorder()
    server.route("/ws", handler, auth=Fortress.query_token(SECRET))
    base = await serve(server)
    # The server honours the token's own exp: a token about to expire.
    short = Fortress.issue_token("alice", SECRET, expires_in=1.5)
    async with connect(f"{base}/ws?token={short}") as plain:
        with pytest.raises(ConnectionClosed) as closed:
            await within(plain.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "token expired")
    assert (await within(handler.connected.get())).user_id == "alice"

    first = Fortress.issue_token("alice", SECRET, expires_in=1.5)
    refreshed = TaggedClient(f"{base}/ws?token={first}")
    await refreshed.open()
    await refreshed.send({"type": "refresh", "id": 1, "token": "garbage"})
    assert (await refreshed.next_control("error"))["code"] == "unauthorized"
    bob = Fortress.issue_token("bob", SECRET)
    await refreshed.send({"type": "refresh", "id": 2, "token": bob})  # another user: refused
    assert (await refreshed.next_control("error"))["id"] == 2
    renewed = Fortress.issue_token("alice", SECRET)
    await refreshed.send({"type": "refresh", "id": 3, "token": renewed})
    assert await refreshed.next_control("refreshed") == {"type": "refreshed", "id": 3}
    # Well past the first token's expiry the socket still works.
    deadline = time.time() + 2.0
    socket = await within(handler.connected.get())
    while time.time() < deadline:
        await server.hub.send_to(socket.id, SocketMessage.Text("tick"))
        assert await within(refreshed.direct.get()) == "tick"
    assert socket.is_open
    await refreshed.close()


async def test_revoked_tokens_and_disconnect_user(serve: Serve) -> None:
    revoked = RevocationList()
    server = StreamServer()
    handler = Recorder()
    server.route("/ws", handler, auth=Fortress.query_token(SECRET, revoked=revoked))
    base = await serve(server)
    stolen = Fortress.issue_token("alice", SECRET)
    phone = await connect(f"{base}/ws?token={stolen}")
    laptop = await connect(f"{base}/ws?token={Fortress.issue_token('alice', SECRET)}")
    other = await connect(f"{base}/ws?token={Fortress.issue_token('bob', SECRET)}")
    for _ in range(3):
        await within(handler.connected.get())
    claims = Fortress.decode(stolen, SECRET)
    assert claims is not None and claims.jti is not None
    revoked.revoke(claims.jti, claims.expires_at)
    assert await server.hub.disconnect_user("alice") == 2
    for ws in (phone, laptop):
        with pytest.raises(ConnectionClosed) as closed:
            await within(ws.recv())
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    for _ in range(2):  # on_disconnect runs once the socket left every index
        await within(handler.disconnected.get())
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{base}/ws?token={stolen}")
    assert refused.value.response.status_code == 401
    assert await server.hub.online_users() == ["bob"]
    await other.close()


async def test_handler_authenticate_hook_runs_before_the_upgrade(serve: Serve) -> None:
    from nucleus.stream import HandshakeRequest

    class ApiKeys(Recorder):
        async def authenticate(self, request: HandshakeRequest) -> str | None:
            return {"k-ann": "ann"}.get(request.headers.get("x-api-key", ""))

    handler = ApiKeys()
    server = StreamServer()
    server.route("/ws", handler)
    base = await serve(server)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{base}/ws", additional_headers={"X-Api-Key": "wrong"})
    assert refused.value.response.status_code == 401
    assert handler.events.empty()  # on_connect never ran
    async with connect(f"{base}/ws", additional_headers={"X-Api-Key": "k-ann"}):
        assert (await within(handler.connected.get())).user_id == "ann"
