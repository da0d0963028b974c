"""
TypeScript declarations from JSON Schema: what ``nucleus types`` writes.

Pure text in, text out: every entry of a schema document's ``$defs`` becomes
one exported declaration under its own name, an ``interface`` for an object
with properties, a ``type`` otherwise. It covers what msgspec and pydantic
emit: objects with required and optional properties, arrays and tuples,
dicts, enums and literals, unions (tagged ones too), nullable values and
references between definitions. What it cannot express (bounds, formats,
patterns) is left out, and a schema it does not know becomes ``unknown``: a
type is never stricter than its schema, except that TypeScript refuses
properties an object literal's type does not declare, which a model that
does not forbid them would ignore. It reads no models and imports nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["type_name", "typescript"]

# Precedence of a type expression: what may stand, unparenthesized, where.
_UNION, _INTERSECTION, _ATOM = range(3)
Expr = tuple[str, int]

_UNKNOWN: Expr = ("unknown", _ATOM)
_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*\Z", re.ASCII)
_REF_PREFIXES = ("#/$defs/", "#/definitions/")
_SCALARS = {"string": "string", "integer": "number", "number": "number",
            "boolean": "boolean", "null": "null"}
_INDENT = "  "


def type_name(name: str) -> str:
    """A TypeScript identifier for the definition ``name`` (``Page[Item]`` -> ``Page_Item_``)."""
    cleaned = re.sub(r"[^\w$]", "_", name, flags=re.ASCII)
    return cleaned if _IDENTIFIER.match(cleaned) else f"_{cleaned}"


def typescript(document: Mapping[str, Any], *, header: Sequence[str] = ()) -> str:
    """
    Declarations for every definition in ``document["$defs"]``, in their order.

    ``header`` lines open the text as ``//`` comments. Raises ValueError when two
    definitions would get one TypeScript name.
    """
    defs: Mapping[str, Any] = document.get("$defs", {})
    names: dict[str, str] = {}
    for name in defs:
        ts = type_name(name)
        if ts in names.values():
            raise ValueError(f"two definitions would both be the TypeScript type {ts!r}: "
                             f"{', '.join(repr(n) for n, t in names.items() if t == ts)} "
                             f"and {name!r}")
        names[name] = ts
    writer = _Writer(names)
    parts = ["".join(f"// {line}".rstrip() + "\n" for line in header)] if header else []
    parts.extend(writer.declaration(name, schema) for name, schema in defs.items())
    return "\n".join(parts)


def _literal(value: Any) -> Expr:
    if value is None or isinstance(value, (str, bool, int, float)):
        return json.dumps(value), _ATOM  # a JSON scalar is a TypeScript literal
    return _UNKNOWN


def _union(members: Sequence[Expr]) -> Expr:
    texts: list[str] = []
    for text, _ in members:
        if text == "unknown":
            return _UNKNOWN
        if text != "never" and text not in texts:
            texts.append(text)
    if not texts:
        return "never", _ATOM
    if len(texts) == 1:
        return next(m for m in members if m[0] == texts[0])
    return " | ".join(texts), _UNION


def _intersection(members: Sequence[Expr]) -> Expr:
    parts = [text if level >= _INTERSECTION else f"({text})"
             for text, level in members if text != "unknown"]
    if not parts:
        return _UNKNOWN
    if len(parts) == 1:
        return next(m for m in members if m[0] != "unknown")
    return " & ".join(parts), _INTERSECTION


def _doc(lines: Sequence[str], indent: str) -> str:
    """A ``/** ... */`` comment holding ``lines`` (none: nothing)."""
    lines = [line.replace("*/", "*\\/").rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return ""
    if len(lines) == 1:
        return f"{indent}/** {lines[0]} */\n"
    body = "".join(f"{indent} * {line}".rstrip() + "\n" for line in lines)
    return f"{indent}/**\n{body}{indent} */\n"


def _description(schema: Any) -> list[str]:
    if not isinstance(schema, Mapping):
        return []
    lines: list[str] = []
    for key in ("description", "$comment"):
        if isinstance(schema.get(key), str) and schema[key].strip():
            if lines:
                lines.append("")
            lines.extend(schema[key].strip().splitlines())
    return lines


class _Writer:
    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = names

    def declaration(self, name: str, schema: Any) -> str:
        doc = _doc(_description(schema), "")
        ts = self.names[name]
        if self._is_interface(schema):
            return f"{doc}export interface {ts} {self._members(schema, 0)}\n"
        text, _ = self.expr(schema, 0)
        return f"{doc}export type {ts} = {text};\n"

    @staticmethod
    def _is_interface(schema: Any) -> bool:
        if not isinstance(schema, Mapping) or schema.get("nullable") is True:
            return False
        if any(key in schema for key in ("$ref", "const", "enum", "anyOf", "oneOf", "allOf")):
            return False
        properties = schema.get("properties")
        return schema.get("type", "object") == "object" and isinstance(properties, Mapping) and (
            len(properties) > 0)  # no properties: an index signature, not an empty interface

    def expr(self, schema: Any, depth: int) -> Expr:
        """The type of a value ``schema`` accepts; ``depth`` indents multi-line objects."""
        if schema is False:
            return "never", _ATOM
        if not isinstance(schema, Mapping):
            return _UNKNOWN
        bare = self._bare(schema, depth)
        return _union([bare, ("null", _ATOM)]) if schema.get("nullable") is True else bare

    def _bare(self, schema: Mapping[str, Any], depth: int) -> Expr:
        if isinstance(schema.get("$ref"), str):
            return self._ref(schema["$ref"]), _ATOM
        if "const" in schema:
            return _literal(schema["const"])
        if isinstance(schema.get("enum"), list):
            return _union([_literal(value) for value in schema["enum"]])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                return _union([self.expr(member, depth) for member in schema[key]])
        if isinstance(schema.get("allOf"), list):
            return _intersection([self.expr(member, depth) for member in schema["allOf"]])
        kind = schema.get("type")
        if isinstance(kind, list):
            return _union([self._typed(schema, one, depth) for one in kind])
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
        return self._typed(schema, kind, depth)

    def _ref(self, ref: str) -> str:
        for prefix in _REF_PREFIXES:
            if ref.startswith(prefix):
                name = ref[len(prefix):].replace("~1", "/").replace("~0", "~")
                if name in self.names:
                    return self.names[name]
        return "unknown"

    def _typed(self, schema: Mapping[str, Any], kind: Any, depth: int) -> Expr:
        if kind in _SCALARS:
            return _SCALARS[kind], _ATOM
        if kind == "array":
            return self._array(schema, depth), _ATOM
        if kind == "object":
            return self._object(schema, depth), _ATOM
        return _UNKNOWN

    def _array(self, schema: Mapping[str, Any], depth: int) -> str:
        items = schema.get("items", True)
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):  # a tuple, perhaps with a rest
            elements = [self.expr(item, depth)[0] for item in prefix]
            if items is not False:
                elements.append(f"...{self._element(items, depth)}[]")
            return f"[{', '.join(elements)}]"
        return f"{self._element(items, depth)}[]"

    def _element(self, schema: Any, depth: int) -> str:
        text, level = self.expr(schema, depth) if schema is not True else _UNKNOWN
        return text if level == _ATOM else f"({text})"

    def _object(self, schema: Mapping[str, Any], depth: int) -> str:
        if isinstance(schema.get("properties"), Mapping) and schema["properties"]:
            return self._members(schema, depth)
        extra = schema.get("additionalProperties", True)
        if extra is False:
            return "Record<string, never>"
        value = self.expr(extra, depth)[0] if extra is not True else "unknown"
        return f"{{ [key: string]: {value} }}"

    def _members(self, schema: Mapping[str, Any], depth: int) -> str:
        """``{ name: Type; other?: Type }`` over lines, for an object with properties."""
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        indent = _INDENT * (depth + 1)
        lines: list[str] = []
        for name, sub in properties.items():
            notes = _description(sub)
            if isinstance(sub, Mapping) and "default" in sub:
                notes.append(f"@default {json.dumps(sub['default'])}")
            key = name if _IDENTIFIER.match(name) else json.dumps(name)
            optional = "" if name in required else "?"
            lines.append(f"{_doc(notes, indent)}{indent}{key}{optional}: "
                         f"{self.expr(sub, depth + 1)[0]};\n")
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping) or extra is True:
            lines.append(f"{indent}[key: string]: unknown;\n")
        return "{\n" + "".join(lines) + _INDENT * depth + "}"
