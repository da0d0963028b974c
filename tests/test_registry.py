"""The registry: sockets, rooms and users, pure bookkeeping with nothing left behind."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from nucleus.stream import SocketNotFound
from nucleus.stream._registry import Departure, Registry


@dataclass(frozen=True)
class Sock:
    id: str


def registry_with(*ids: str) -> Registry[Sock]:
    registry: Registry[Sock] = Registry()
    for socket_id in ids:
        registry.add(Sock(socket_id))
    return registry


# -- sockets ---------------------------------------------------------------------


def test_add_get_and_count() -> None:
    registry = registry_with("a", "b")
    assert registry.get("a") == Sock("a")
    assert "b" in registry and "c" not in registry
    assert len(registry) == 2


def test_adding_the_same_id_twice_is_refused() -> None:
    registry = registry_with("a")
    with pytest.raises(ValueError, match="'a'"):
        registry.add(Sock("a"))
    assert len(registry) == 1


def test_unknown_socket_raises_socket_not_found_saying_what_to_do() -> None:
    registry = registry_with("a")
    registry.remove("a")
    for call in (
        lambda: registry.get("a"),
        lambda: registry.join("a", "room"),
        lambda: registry.leave("a", "room"),
        lambda: registry.rooms_of("a"),
        lambda: registry.bind_user("a", "u"),
    ):
        with pytest.raises(SocketNotFound, match=r"no open socket 'a'.*on_disconnect"):
            call()
    assert registry.is_empty()  # the failed calls left nothing behind


def test_removing_an_unknown_socket_changes_nothing() -> None:
    registry = registry_with("a")
    assert registry.remove("ghost") == Departure(frozenset(), frozenset(), None, False)
    assert len(registry) == 1


# -- rooms -----------------------------------------------------------------------


def test_join_and_leave_say_whether_anything_changed() -> None:
    registry = registry_with("a")
    assert registry.join("a", "r") is True
    assert registry.join("a", "r") is False
    assert registry.leave("a", "r") is True
    assert registry.leave("a", "r") is False
    assert registry.leave("a", "never-joined") is False


def test_members_keep_join_order_and_rooms_of_lists_a_sockets_rooms() -> None:
    registry = registry_with("a", "b", "c")
    for socket_id in ("c", "a", "b"):
        registry.join(socket_id, "r")
    registry.join("a", "s")
    assert list(registry.members("r")) == ["c", "a", "b"]
    assert registry.members("r")["a"] == Sock("a")
    assert registry.rooms_of("a") == {"r", "s"}
    assert registry.rooms_of("b") == {"r"}
    assert registry.room_count() == 2


def test_the_last_leave_deletes_the_room() -> None:
    registry = registry_with("a", "b")
    registry.join("a", "r")
    registry.join("b", "r")
    registry.leave("a", "r")
    assert registry.room_count() == 1
    registry.leave("b", "r")
    assert registry.room_count() == 0
    assert dict(registry.members("r")) == {}
    assert registry.rooms_of("b") == frozenset()


def test_remove_reports_rooms_left_and_rooms_emptied() -> None:
    registry = registry_with("a", "b")
    for room in ("shared", "solo"):
        registry.join("a", room)
    registry.join("b", "shared")
    departure = registry.remove("a")
    assert departure.rooms == {"shared", "solo"}
    assert departure.emptied_rooms == {"solo"}
    assert list(registry.members("shared")) == ["b"]
    assert registry.room_count() == 1


def owner(registry: Registry[Sock], socket_id: str) -> str | None:
    return {sid: user for sid, user, _ in registry.snapshot()}.get(socket_id)


# -- users -----------------------------------------------------------------------


def test_bind_user_reports_who_came_online() -> None:
    registry = registry_with("a", "b")
    assert registry.bind_user("a", "ada") == (None, False, True)
    assert registry.bind_user("b", "ada") == (None, False, False)  # a second device
    assert registry.bind_user("a", "ada") == ("ada", False, False)  # no change
    assert list(registry.user_sockets("ada")) == ["a", "b"]
    assert owner(registry, "a") == "ada"


def test_rebinding_moves_the_socket_and_reports_the_previous_user_going_offline() -> None:
    registry = registry_with("a", "b")
    registry.bind_user("a", "ada")
    registry.bind_user("b", "ada")
    assert registry.bind_user("a", "bob") == ("ada", False, True)  # ada still has b
    assert registry.bind_user("b", "bob") == ("ada", True, False)  # ada's last socket
    assert registry.users() == ["bob"]
    assert list(registry.user_sockets("bob")) == ["a", "b"]
    assert dict(registry.user_sockets("ada")) == {}


def test_users_are_sorted() -> None:
    registry = registry_with("1", "2", "3")
    for socket_id, user in (("1", "zoe"), ("2", "ada"), ("3", "mia")):
        registry.bind_user(socket_id, user)
    assert registry.users() == ["ada", "mia", "zoe"]


def test_remove_reports_whether_the_user_went_offline() -> None:
    registry = registry_with("a", "b", "c")
    registry.bind_user("a", "ada")
    registry.bind_user("b", "ada")
    assert registry.remove("a") == Departure(frozenset(), frozenset(), "ada", False)
    assert registry.remove("b") == Departure(frozenset(), frozenset(), "ada", True)
    assert registry.remove("c") == Departure(frozenset(), frozenset(), None, False)
    assert registry.users() == []
    assert owner(registry, "a") is None


def test_removing_every_socket_leaves_nothing() -> None:
    registry = registry_with("a", "b")
    registry.join("a", "r")
    registry.join("b", "r")
    registry.bind_user("a", "ada")
    registry.bind_user("b", "bob")
    assert not registry.is_empty()
    registry.remove("a")
    assert not registry.is_empty()
    registry.remove("b")
    assert registry.is_empty()


# -- a randomized comparison with a reference model ------------------------------


@dataclass
class Model:
    """What the registry should hold, written as plainly as possible."""

    sockets: list[str] = field(default_factory=list)
    rooms: dict[str, list[str]] = field(default_factory=dict)  # members in join order
    owners: dict[str, str] = field(default_factory=dict)
    devices: dict[str, list[str]] = field(default_factory=dict)  # in bind order

    def rooms_of(self, socket_id: str) -> set[str]:
        return {room for room, members in self.rooms.items() if socket_id in members}

    def unbind(self, socket_id: str) -> tuple[str | None, bool]:
        user = self.owners.pop(socket_id, None)
        if user is None:
            return None, False
        self.devices[user].remove(socket_id)
        if self.devices[user]:
            return user, False
        del self.devices[user]
        return user, True


def check_same(registry: Registry[Sock], model: Model) -> None:
    assert len(registry) == len(model.sockets)
    assert registry.room_count() == len(model.rooms)
    for room, members in model.rooms.items():
        assert list(registry.members(room)) == members
    for socket_id in model.sockets:
        assert registry.rooms_of(socket_id) == model.rooms_of(socket_id)
        assert owner(registry, socket_id) == model.owners.get(socket_id)
    assert registry.users() == sorted(model.devices)
    for user, sockets in model.devices.items():
        assert list(registry.user_sockets(user)) == sockets
    assert registry.is_empty() == (not model.sockets)


def step(rng: random.Random, registry: Registry[Sock], model: Model, serial: int) -> None:
    known = model.sockets or ["none"]
    socket_id = rng.choice([*known, f"s{serial}"])  # sometimes a fresh or unknown id
    room, user = rng.choice("rstu"), rng.choice(["ada", "bob", "cy"])
    action = rng.choice(["add", "add", "join", "join", "join", "leave", "bind", "bind", "remove"])
    if socket_id not in model.sockets and action != "add":
        if action == "remove":
            assert registry.remove(socket_id) == Departure(frozenset(), frozenset(), None, False)
        else:
            with pytest.raises(SocketNotFound):
                {"join": registry.join, "leave": registry.leave,
                 "bind": registry.bind_user}[action](socket_id, room)
        return
    if action == "add":
        if socket_id in model.sockets:
            with pytest.raises(ValueError):
                registry.add(Sock(socket_id))
        else:
            registry.add(Sock(socket_id))
            model.sockets.append(socket_id)
    elif action == "join":
        members = model.rooms.setdefault(room, [])
        assert registry.join(socket_id, room) == (socket_id not in members)
        if socket_id not in members:
            members.append(socket_id)
    elif action == "leave":
        was_member = socket_id in model.rooms.get(room, [])
        assert registry.leave(socket_id, room) == was_member
        if was_member:
            model.rooms[room].remove(socket_id)
            if not model.rooms[room]:
                del model.rooms[room]
    elif action == "bind":
        previous = model.owners.get(socket_id)
        if previous == user:
            expected: tuple[str | None, bool, bool] = (user, False, False)
        else:
            _, went_offline = model.unbind(socket_id)
            came_online = user not in model.devices
            model.owners[socket_id] = user
            model.devices.setdefault(user, []).append(socket_id)
            expected = (previous, went_offline, came_online)
        assert registry.bind_user(socket_id, user) == expected
    else:
        rooms = model.rooms_of(socket_id)
        emptied = {room for room in rooms if model.rooms[room] == [socket_id]}
        for room in rooms:
            model.rooms[room].remove(socket_id)
            if not model.rooms[room]:
                del model.rooms[room]
        model.sockets.remove(socket_id)
        owner, offline = model.unbind(socket_id)
        assert registry.remove(socket_id) == Departure(
            frozenset(rooms), frozenset(emptied), owner, offline
        )


@pytest.mark.parametrize("seed", range(25))
def test_matches_a_reference_model_over_random_operations(seed: int) -> None:
    rng = random.Random(seed)
    registry: Registry[Sock] = Registry()
    model = Model()
    for serial in range(400):
        step(rng, registry, model, serial)
        check_same(registry, model)
    for socket_id in list(model.sockets):  # then everyone disconnects
        registry.remove(socket_id)
    assert registry.is_empty()
    assert registry.room_count() == 0 and registry.users() == []
