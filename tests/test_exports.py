"""The public surface: ``nucleus.stream.__all__`` is complete, and every error is exported."""

from __future__ import annotations

import inspect

import nucleus.stream
from nucleus.stream import StreamError, _errors


def public_names() -> set[str]:
    return {
        name
        for name, value in vars(nucleus.stream).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }


def error_classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(_errors).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == _errors.__name__
    ]


def test_all_is_exactly_the_public_names() -> None:
    assert len(nucleus.stream.__all__) == len(set(nucleus.stream.__all__))
    assert set(nucleus.stream.__all__) == public_names()


def test_every_exported_name_resolves() -> None:
    namespace: dict[str, object] = {}
    exec("from nucleus.stream import *", namespace)
    for name in nucleus.stream.__all__:
        assert namespace[name] is getattr(nucleus.stream, name)


def test_every_error_is_exported_and_derives_from_stream_error() -> None:
    classes = error_classes()
    assert {cls.__name__ for cls in classes} == set(_errors.__all__)
    for cls in classes:
        assert getattr(nucleus.stream, cls.__name__) is cls
        assert cls.__name__ in nucleus.stream.__all__
        assert issubclass(cls, StreamError)


def test_the_error_tree_is_drawn_in_the_module_docstring() -> None:
    tree = _errors.__doc__ or ""
    for cls in error_classes():
        assert cls.__name__ in tree
