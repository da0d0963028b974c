"""nucleus.client's public surface: ``__all__`` is complete, every error is exported and drawn."""

from __future__ import annotations

import inspect

import nucleus.client
from nucleus.client import StreamError, _errors


def test_all_is_exactly_the_public_names() -> None:
    public = {name for name, value in vars(nucleus.client).items()
              if not name.startswith("_") and not inspect.ismodule(value)}
    assert len(nucleus.client.__all__) == len(set(nucleus.client.__all__))
    assert set(nucleus.client.__all__) == public


def test_every_client_error_is_exported_derives_from_stream_error_and_is_drawn() -> None:
    classes = [value for value in vars(_errors).values()
               if inspect.isclass(value) and issubclass(value, BaseException)
               and value.__module__ == _errors.__name__]
    assert {cls.__name__ for cls in classes} == set(_errors.__all__)
    for cls in classes:
        assert getattr(nucleus.client, cls.__name__) is cls
        assert issubclass(cls, StreamError)
        assert cls.__name__ in (_errors.__doc__ or "")
