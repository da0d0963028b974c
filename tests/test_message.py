"""SocketMessage: the two immutable variants, the JSON codec, and decode_as."""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from typing import Literal

import msgspec
import pydantic
import pytest

from nucleus.stream import (
    EncodeError,
    InvalidMessage,
    MessageError,
    SocketMessage,
    decode_as,
)


@dataclasses.dataclass
class User:
    name: str
    age: int


@dataclasses.dataclass
class Team:
    lead: User
    members: list[User]


class Point(msgspec.Struct):
    x: int
    y: int


class Profile(pydantic.BaseModel):
    name: str
    scores: list[int] = []


class Account(pydantic.BaseModel):
    profile: Profile
    created: datetime.datetime


@dataclasses.dataclass
class Order:
    state: Literal["open", "closed"]


def describe(msg: SocketMessage) -> str:
    match msg:
        case SocketMessage.Text(text):
            return f"text:{text}"
        case SocketMessage.Binary(data=data):
            return f"binary:{len(data)}"
    return "neither"


# -- the variants ---------------------------------------------------------------


def test_variants_can_be_matched_positionally_and_by_keyword() -> None:
    assert describe(SocketMessage.Text("hi")) == "text:hi"
    assert describe(SocketMessage.Binary(b"\x00\x01\x02")) == "binary:3"


def test_variants_are_socket_messages_with_a_payload() -> None:
    text, binary = SocketMessage.Text("hi"), SocketMessage.Binary(b"hi")
    assert isinstance(text, SocketMessage) and isinstance(binary, SocketMessage)
    assert text.payload == "hi"
    assert binary.payload == b"hi"


@pytest.mark.parametrize(
    ("msg", "field"), [(SocketMessage.Text("a"), "text"), (SocketMessage.Binary(b"a"), "data")]
)
def test_variants_are_immutable(msg: SocketMessage, field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(msg, field, "changed")
    with pytest.raises((AttributeError, TypeError)):
        msg.extra = 1  # type: ignore[attr-defined]


def test_variants_compare_and_hash_by_value() -> None:
    assert SocketMessage.Text("a") == SocketMessage.Text("a")
    assert SocketMessage.Text("a") != SocketMessage.Binary(b"a")
    assert len({SocketMessage.Text("a"), SocketMessage.Text("a"), SocketMessage.Binary(b"a")}) == 2


def test_text_repr_shows_short_text_whole() -> None:
    assert repr(SocketMessage.Text("x" * 60)) == f"SocketMessage.Text({'x' * 60!r})"


def test_text_repr_truncates_long_text() -> None:
    shown = repr(SocketMessage.Text("y" * 10_000))
    assert shown == f"SocketMessage.Text({'y' * 57 + '...'!r})"


def test_binary_repr_shows_the_size_not_the_bytes() -> None:
    shown = repr(SocketMessage.Binary(b"secret-token" * 100))
    assert shown == "SocketMessage.Binary(<1200 bytes>)"


# -- SocketMessage.json -----------------------------------------------------------


def test_json_is_compact_text() -> None:
    msg = SocketMessage.json({"a": 1, "b": [True, None, "é"]})
    assert msg == SocketMessage.Text('{"a":1,"b":[true,null,"é"]}')


def test_json_encodes_datetimes_and_uuids_as_strings() -> None:
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    msg = SocketMessage.json({"at": when, "id": ident})
    assert json.loads(msg.text) == {
        "at": "2024-05-06T07:08:09Z",
        "id": "12345678-1234-5678-1234-567812345678",
    }


def test_json_encodes_dataclasses_structs_and_pydantic_models_as_their_fields() -> None:
    account = Account(
        profile=Profile(name="ada", scores=[3]),
        created=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    msg = SocketMessage.json(
        {"team": Team(User("a", 1), [User("b", 2)]), "point": Point(1, 2), "account": account}
    )
    assert json.loads(msg.text) == {
        "team": {"lead": {"name": "a", "age": 1}, "members": [{"name": "b", "age": 2}]},
        "point": {"x": 1, "y": 2},
        "account": {"profile": {"name": "ada", "scores": [3]}, "created": "2024-01-01T00:00:00Z"},
    }


def test_json_encodes_sets_as_arrays() -> None:
    msg = SocketMessage.json({"tags": {"b", "a", "c"}, "frozen": frozenset({1})})
    decoded = json.loads(msg.text)
    assert sorted(decoded["tags"]) == ["a", "b", "c"]
    assert decoded["frozen"] == [1]


@pytest.mark.parametrize(
    ("value", "culprit"),
    [
        (object(), "object"),
        ({"deep": [1, {"x": object()}]}, "object"),
        ({(1, 2): "tuple keys"}, "tuple"),
        ([1, 2, lambda: None], "function"),
    ],
)
def test_json_refuses_unencodable_values_even_nested(value: object, culprit: str) -> None:
    with pytest.raises(EncodeError, match=culprit) as caught:
        SocketMessage.json(value)
    assert isinstance(caught.value, MessageError)
    assert "dataclasses" in str(caught.value)  # says what would have worked


# -- as_json ---------------------------------------------------------------------


def test_as_json_decodes_text() -> None:
    assert SocketMessage.Text('{"a":[1,2]}').as_json() == {"a": [1, 2]}
    assert SocketMessage.Text(" 42 ").as_json() == 42


@pytest.mark.parametrize(
    "msg",
    [
        SocketMessage.Binary(b'{"a":1}'),
        SocketMessage.Text("not json"),
        SocketMessage.Text('{"a":1} trailing'),
        SocketMessage.Text(""),
    ],
)
def test_as_json_is_none_for_binary_or_invalid_json(msg: SocketMessage) -> None:
    assert msg.as_json() is None


def test_as_json_is_none_for_text_that_is_not_utf8_encodable() -> None:
    assert SocketMessage.Text('"\ud800"').as_json() is None


@pytest.mark.parametrize(
    ("payload", "tp", "expected"),
    [
        ('{"name":"ada","age":36}', User, User("ada", 36)),
        ('{"x":1,"y":2}', Point, Point(1, 2)),
        ('{"name":"ada","scores":[1]}', Profile, Profile(name="ada", scores=[1])),
    ],
)
def test_as_json_with_a_type_returns_an_instance(payload: str, tp: type, expected: object) -> None:
    assert SocketMessage.Text(payload).as_json(tp) == expected


@pytest.mark.parametrize("tp", [User, Point, Profile])
@pytest.mark.parametrize(
    "msg",
    [
        SocketMessage.Text('{"name":7}'),
        SocketMessage.Text("[]"),
        SocketMessage.Text("{oops"),
        SocketMessage.Binary(b'{"name":"ada","age":36,"x":1,"y":2}'),
    ],
)
def test_as_json_with_a_type_is_none_when_it_does_not_fit(msg: SocketMessage, tp: type) -> None:
    assert msg.as_json(tp) is None


# -- decode_as -------------------------------------------------------------------


def test_decode_as_accepts_str_and_bytes() -> None:
    assert decode_as('{"name":"a","age":1}', User) == User("a", 1)
    assert decode_as(b'{"name":"a","age":1}', User) == User("a", 1)
    assert decode_as(b'{"name":"a"}', Profile) == Profile(name="a")


@pytest.mark.parametrize(
    ("payload", "tp", "path"),
    [
        ('{"lead":{"name":"a","age":"x"},"members":[]}', Team, "$.lead.age"),
        ('{"lead":{"name":"a","age":1},"members":[{"name":"b"}]}', Team, "$.members[0]"),
        ('{"x":1,"y":"2"}', Point, "$.y"),
        ('{"profile":{"name":"a","scores":[1,"x"]},"created":"2024-01-01T00:00:00Z"}',
         Account, "$.profile.scores[1]"),
        ('{"profile":{},"created":"2024-01-01T00:00:00Z"}', Account, "$.profile.name"),
    ],
)
def test_decode_as_names_the_offending_field(payload: str, tp: type, path: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_as(payload, tp)
    assert caught.value.path == path
    assert str(caught.value) == f"{caught.value.reason} at {path}"


def test_decode_as_reports_a_missing_field_by_name() -> None:
    with pytest.raises(InvalidMessage, match="`age`") as caught:
        decode_as('{"name":"a"}', User)
    assert caught.value.path is None  # the object at the root lacks it


@pytest.mark.parametrize("tp", [User, Profile])
@pytest.mark.parametrize("payload", ["[]", "{", "", "nul"])
def test_decode_as_wrong_shape_or_malformed_json_has_no_path(payload: str, tp: type) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_as(payload, tp)
    assert caught.value.path is None
    assert str(caught.value) == caught.value.reason


@pytest.mark.parametrize("tp", [User, Profile])
def test_decode_as_error_does_not_echo_the_payload(tp: type) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_as('{"name":"a","age":"SECRET-VALUE","scores":"SECRET-VALUE"}', tp)
    assert "SECRET-VALUE" not in str(caught.value)


def test_decode_as_error_does_not_echo_an_invalid_enum_value() -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_as('{"state":"SECRET-VALUE"}', Order)
    assert "SECRET-VALUE" not in str(caught.value)
