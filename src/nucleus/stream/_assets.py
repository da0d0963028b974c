"""
Serving a small file that never changes while the server runs (the browser
client): gzip when the browser accepts it, an ``ETag``, and ``304 Not
Modified`` for a browser that already has it. Pure: built once, answered from
memory.
"""

from __future__ import annotations

import gzip
import hashlib

from ._acceptor import HttpResponse
from ._request import HandshakeRequest

__all__ = ["Asset"]


class Asset:
    """One file, answered as itself or gzipped, revalidated by its ETag."""

    def __init__(self, body: bytes, content_type: str, max_age: int = 3600) -> None:
        self.body = body
        self.gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        cache = (("Cache-Control", f"public, max-age={max_age}, must-revalidate"),
                 ("ETag", self.etag), ("Vary", "Accept-Encoding"))
        self._plain = HttpResponse(200, body, content_type, cache)
        self._zipped = HttpResponse(200, self.gzipped, content_type,
                                    (*cache, ("Content-Encoding", "gzip")))
        self._fresh = HttpResponse(304, b"", content_type, cache)

    def __call__(self, request: HandshakeRequest) -> HttpResponse:
        seen = request.headers.get("if-none-match", "")
        if self.etag in (tag.strip().removeprefix("W/") for tag in seen.split(",")):
            return self._fresh
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            return self._zipped
        return self._plain


def _accepts_gzip(header: str) -> bool:
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
