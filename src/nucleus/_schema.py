"""
The JSON Schema of an app's message models: what ``nucleus types`` exports.

Each route's ``message_model`` is described by the library that validates it
(see ``decode_as``): pydantic models by pydantic, in validation mode;
everything else (msgspec Structs, dataclasses, TypedDicts) by msgspec. Every
model, and every type it references, is one entry of the document's ``$defs``
named after its class, so that ``_typegen`` can name the TypeScript types the
same. Nothing here starts, connects or serves anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .stream import ConfigError, StreamServer
from .stream._message import MessageModel, _is_pydantic_model

__all__ = ["DIALECT", "message_schema", "route_models"]

#: The JSON Schema dialect of the document (msgspec's and pydantic's).
DIALECT = "https://json-schema.org/draft/2020-12/schema"

_REF = "#/$defs/"


def route_models(server: StreamServer) -> dict[str, MessageModel]:
    """Each route's path and its ``message_model``, for the routes that declare one."""
    return {path: route.message_model for path, route in server.routes.items()
            if route.message_model is not None}


def message_schema(
    models: Mapping[str, MessageModel], *, title: str | None = None
) -> dict[str, Any]:
    """
    One JSON Schema document with every model of ``models`` (route path -> model)
    under ``$defs``, each noting in its ``$comment`` the routes that accept it.

    Raises :class:`ConfigError` when a model cannot be described, or when two
    different definitions would share a name.
    """
    routes: dict[MessageModel, list[str]] = {}
    for path, model in models.items():
        routes.setdefault(model, []).append(path)
    pydantic: list[Any] = [model for model in routes if _is_pydantic_model(model)]
    others = [model for model in routes if not _is_pydantic_model(model)]
    defs: dict[str, Any] = {}
    named: dict[MessageModel, str] = {}
    if others:
        for model, schema in zip(others, _msgspec_schemas(others, defs), strict=True):
            named[model] = _definition(model, schema, defs)
    if pydantic:
        from pydantic.json_schema import models_json_schema  # only when pydantic is in use

        refs, document = models_json_schema([(model, "validation") for model in pydantic],
                                            ref_template=_REF + "{model}")
        _merge(defs, document.get("$defs", {}))
        for model in pydantic:
            named[model] = _definition(model, refs[(model, "validation")], defs)
    for model, paths in routes.items():
        where = f"route {paths[0]}" if len(paths) == 1 else f"routes {', '.join(paths)}"
        defs[named[model]] = {**defs[named[model]], "$comment": f"The message_model of {where}."}
    document = {"$schema": DIALECT, "title": title, "$defs": defs}
    return {key: value for key, value in document.items() if value is not None}


def _msgspec_schemas(
    models: list[MessageModel], defs: dict[str, Any]
) -> tuple[dict[str, Any], ...]:
    try:
        schemas, components = msgspec.json.schema_components(models, ref_template=_REF + "{name}")
    except (TypeError, ValueError):
        for model in models:  # which one?
            try:
                msgspec.json.schema(model)
            except (TypeError, ValueError) as exc:
                reason = str(exc).splitlines()[-1]
                raise ConfigError(
                    f"cannot describe message_model {_label(model)} as JSON Schema: "
                    f"{reason}") from exc
        raise
    _merge(defs, components)
    return schemas


def _definition(model: MessageModel, schema: Mapping[str, Any], defs: dict[str, Any]) -> str:
    """The name under ``$defs`` of ``model``, whose schema is ``schema`` (a ref, usually)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF) and len(schema) == 1:
        return ref[len(_REF):]
    name = getattr(model, "__name__", "Message")
    _merge(defs, {name: dict(schema)})
    return name


def _merge(defs: dict[str, Any], more: Mapping[str, Any]) -> None:
    for name, schema in more.items():
        if name in defs and defs[name] != schema:
            raise ConfigError(
                f"two message model types are named {name!r} and differ (two classes with "
                "one name, or one type that both pydantic and msgspec describe): rename one")
        defs[name] = schema


def _label(model: MessageModel) -> str:
    return f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', model)!s}"
