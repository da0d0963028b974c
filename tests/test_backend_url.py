"""Naming a backend by URL: ``backend_from_url``, ``$NUCLEUS_BACKEND`` and ``?prefix=``."""

from __future__ import annotations

import pytest

from nucleus.stream import ConfigError, MemoryBackend, RedisBackend
from nucleus.stream._backend import BACKEND_ENV, backend_from_url


def test_no_url_and_no_environment_means_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert isinstance(backend_from_url(), MemoryBackend)
    assert isinstance(backend_from_url("memory://"), MemoryBackend)


def test_the_environment_names_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "redis://127.0.0.1:6379/3")
    backend = backend_from_url()
    assert isinstance(backend, RedisBackend)
    assert (backend.url, backend.prefix) == ("redis://127.0.0.1:6379/3", "nucleus")


@pytest.mark.parametrize(("url", "redis_url", "prefix"), [
    ("redis://127.0.0.1:6379/15?prefix=app1", "redis://127.0.0.1:6379/15", "app1"),
    ("redis://:secret@h:6379/0?socket_timeout=2&prefix=a-b",
     "redis://:secret@h:6379/0?socket_timeout=2", "a-b"),
    ("unix:///run/redis.sock?db=2&prefix=p", "unix:///run/redis.sock?db=2", "p"),
])
def test_prefix_query_parameter_sets_the_key_prefix(url: str, redis_url: str, prefix: str) -> None:
    backend = backend_from_url(url)
    assert isinstance(backend, RedisBackend)
    # redis-py never sees prefix= (it would pass it to the connection and fail).
    assert (backend.url, backend.prefix) == (redis_url, prefix)
    assert "secret" not in repr(backend)


@pytest.mark.parametrize("url", [
    "redis://h/0?prefix=", "redis://h/0?prefix=a&prefix=b", "redis://h/0?prefix=a%20b",
    "kafka://h",
])
def test_bad_backend_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        backend_from_url(url)
