"""
``_typegen`` (JSON Schema -> TypeScript) and ``_schema`` (message models -> JSON Schema),
with plain calls: no app, no compiler. tests/test_types_command.py compiles the output.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pydantic
import pytest

from nucleus._schema import DIALECT, message_schema
from nucleus._typegen import type_name, typescript
from nucleus.stream import ConfigError


def declare(schema: Any, name: str = "T", **more: Any) -> str:
    return typescript({"$defs": {name: schema, **more}})


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "string"}, "string"),
    ({"type": "integer"}, "number"),
    ({"type": "number", "minimum": 0}, "number"),
    ({"type": "boolean"}, "boolean"),
    ({"type": "null"}, "null"),
    ({}, "unknown"),
    ({"description": "anything"}, "unknown"),
    ({"type": ["string", "null"]}, "string | null"),
    ({"type": "string", "nullable": True}, "string | null"),
    ({"const": "ping"}, '"ping"'),
    ({"enum": ["a", 2, True, None]}, '"a" | 2 | true | null'),
    ({"enum": ["only"]}, '"only"'),
    ({"type": "string", "enum": ["S", "M"]}, '"S" | "M"'),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]}, "string | number"),
    ({"oneOf": [{"type": "string"}, {}]}, "unknown"),
    ({"anyOf": [{}, {"type": "null"}]}, "unknown"),
    ({"allOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/B"}]}, "A & B"),
    ({"type": "array", "items": {"type": "string"}}, "string[]"),
    ({"type": "array"}, "unknown[]"),
    ({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
     "(string | null)[]"),
    ({"type": "array", "items": {"type": "array", "items": {"$ref": "#/$defs/A"}}}, "A[][]"),
    ({"type": "array", "prefixItems": [{"type": "number"}, {"type": "string"}], "items": False},
     "[number, string]"),
    ({"type": "array", "prefixItems": [{"type": "number"}], "items": {"type": "string"}},
     "[number, ...string[]]"),
    ({"type": "object", "additionalProperties": {"type": "integer"}},
     "{ [key: string]: number }"),
    ({"type": "object"}, "{ [key: string]: unknown }"),
    ({"type": "object", "properties": {}, "additionalProperties": False},
     "Record<string, never>"),
    ({"$ref": "#/$defs/A", "default": "a"}, "A"),
    ({"$ref": "#/components/schemas/Elsewhere"}, "unknown"),
    ({"type": "thing"}, "unknown"),
])
def test_each_schema_becomes_its_typescript_type(schema: Any, expected: str) -> None:
    text = declare(schema, A={"type": "string"}, B={"type": "number"})
    assert f"export type T = {expected};\n" in text


def test_an_object_is_an_interface_with_required_and_optional_members() -> None:
    text = declare({
        "title": "Msg",
        "description": "A message.\nSecond line.",
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "what was said"},
            "to": {"anyOf": [{"$ref": "#/$defs/User"}, {"type": "null"}], "default": None},
            "kind": {"enum": ["a", "b"], "default": "a"},
            "odd-name": {"type": "integer"},
            "meta": {"type": "object", "properties": {"seen": {"type": "boolean"}},
                     "required": ["seen"]},
        },
        "required": ["text", "odd-name", "meta"],
        "additionalProperties": False,
    }, name="Msg", User={"type": "object", "properties": {"id": {"type": "string"}}})
    assert text.split("\n\n")[0] + "\n" == (
        "/**\n"
        " * A message.\n"
        " * Second line.\n"
        " */\n"
        "export interface Msg {\n"
        "  /** what was said */\n"
        "  text: string;\n"
        "  /** @default null */\n"
        "  to?: User | null;\n"
        '  /** @default "a" */\n'
        '  kind?: "a" | "b";\n'
        '  "odd-name": number;\n'
        "  meta: {\n"
        "    seen: boolean;\n"
        "  };\n"
        "}\n"
    )
    assert "export interface User {\n  id?: string;\n}\n" in text


def test_extra_properties_allowed_by_the_model_are_allowed_by_the_type() -> None:
    text = declare({"type": "object", "properties": {"a": {"type": "string"}},
                    "required": ["a"], "additionalProperties": True})
    assert "export interface T {\n  a: string;\n  [key: string]: unknown;\n}\n" in text


def test_header_comments_and_definition_comments_are_kept_and_cannot_close_early() -> None:
    text = typescript(
        {"$defs": {"T": {"type": "string", "description": "ends */ here",
                         "$comment": "The message_model of route /ws."}}},
        header=["Generated.", "Do not edit."])
    assert text == (
        "// Generated.\n"
        "// Do not edit.\n"
        "\n"
        "/**\n"
        " * ends *\\/ here\n"
        " *\n"
        " * The message_model of route /ws.\n"
        " */\n"
        "export type T = string;\n"
    )


def test_definition_names_become_identifiers_and_references_follow_them() -> None:
    assert type_name("Page[Item]") == "Page_Item_"
    assert type_name("3d") == "_3d"
    text = typescript({"$defs": {
        "Page[Item]": {"type": "array", "items": {"$ref": "#/$defs/a~1b"}},
        "a/b": {"type": "string"},
    }})
    assert "export type Page_Item_ = a_b[];" in text
    assert "export type a_b = string;" in text
    with pytest.raises(ValueError, match="'a_b'"):
        typescript({"$defs": {"a-b": {}, "a.b": {}}})


def test_a_document_without_definitions_declares_nothing() -> None:
    assert typescript({}) == ""


# _schema: models to one JSON Schema document


class Point(msgspec.Struct):
    x: float
    y: float


class Shape(msgspec.Struct, forbid_unknown_fields=True):
    """A shape on the board."""

    points: list[Point]
    closed: bool = False


@dataclasses.dataclass
class Move:
    dx: int
    dy: int = 0


class Node(pydantic.BaseModel):
    """A tree node."""

    name: str
    children: list[Node] = []


def test_every_kind_of_model_lands_in_defs_noting_its_routes() -> None:
    document = message_schema(
        {"/ws/shapes": Shape, "/ws/moves": Move, "/ws/tree": Node, "/ws/moves2": Move},
        title="Models")
    assert document["$schema"] == DIALECT and document["title"] == "Models"
    defs = document["$defs"]
    assert list(defs) == ["Shape", "Point", "Move", "Node"]
    assert defs["Shape"]["required"] == ["points"]
    assert defs["Shape"]["additionalProperties"] is False
    assert defs["Shape"]["properties"]["points"]["items"] == {"$ref": "#/$defs/Point"}
    assert defs["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert defs["Shape"]["$comment"] == "The message_model of route /ws/shapes."
    assert defs["Move"]["$comment"] == "The message_model of routes /ws/moves, /ws/moves2."
    assert "$comment" not in defs["Point"]


class Join(msgspec.Struct, tag=True):
    room: str


class Say(msgspec.Struct, tag=True):
    text: str


def test_a_union_of_tagged_structs_is_a_discriminated_union_type() -> None:
    document = message_schema({"/ws/chat": Join | Say})
    defs = document["$defs"]
    assert defs["Message"]["anyOf"] == [{"$ref": "#/$defs/Join"}, {"$ref": "#/$defs/Say"}]
    assert defs["Message"]["$comment"] == "The message_model of route /ws/chat."
    assert defs["Join"]["properties"]["type"] == {"enum": ["Join"]}
    declared = typescript(document)
    assert "export type Message = Join | Say;" in declared
    assert 'type: "Join";' in declared


def test_a_model_json_schema_cannot_describe_is_a_config_error_naming_it() -> None:
    class Odd(msgspec.Struct):
        value: object

    with pytest.raises(ConfigError, match=r"message_model .*Odd as JSON Schema: .*object"):
        message_schema({"/ws": Point, "/odd": Odd})


def test_two_different_models_with_one_name_are_refused() -> None:
    class Trip(pydantic.BaseModel):
        class Point(pydantic.BaseModel):  # pydantic's Point, other than msgspec's
            km: float

        stops: list[Point]

    with pytest.raises(ConfigError, match="named 'Point' and differ"):
        message_schema({"/a": Shape, "/b": Trip})
