"""The browser client as users get it: minified, in sync with its source, gzipped, cached."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import httpx

from nucleus.stream import StreamServer, client_js_path

from .conftest import Serve
from .helpers import port_of

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "nucleus" / "stream" / "static"
TERSER = ROOT / "tests" / "typescript" / "node_modules" / ".bin" / "terser"


def test_the_minified_build_is_in_sync_with_the_source(tmp_path: Path) -> None:
    assert TERSER.exists(), "terser is missing: `make test` installs it (`make ts-deps`)"
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nclient:"):].split("\n\n")[0]
    assert "$(TS_DIR)/node_modules/.bin/terser" in recipe
    out = tmp_path / "stream.min.js"
    subprocess.run(["make", "-s", "client", f"CLIENT_OUT={out}"], cwd=ROOT, check=True,
                   timeout=120)
    assert out.read_bytes() == (STATIC / "stream.min.js").read_bytes(), (
        "stream.min.js is stale: run `make client` and commit it")


def test_the_readme_states_the_real_sizes() -> None:
    minified = (STATIC / "stream.min.js").read_bytes()
    sent = gzip.compress(minified, compresslevel=9, mtime=0)
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"([\d.]+) KB minified, ([\d.]+) KB\s+as sent to browsers", readme)
    assert found, "the README no longer states the client's size"
    assert float(found.group(1)) == round(len(minified) / 1000, 1)
    assert float(found.group(2)) == round(len(sent) / 1000, 1)
    assert client_js_path().endswith("stream.min.js")


async def test_the_client_is_served_gzipped_with_an_etag(serve: Serve) -> None:
    port = port_of(await serve(StreamServer()))
    url = f"http://127.0.0.1:{port}/nucleus/stream.js"
    minified = (STATIC / "stream.min.js").read_bytes()
    async with httpx.AsyncClient() as http:
        zipped = await http.get(url, headers={"accept-encoding": "gzip, br"})
        assert zipped.status_code == 200
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == minified  # httpx inflates it
        assert int(zipped.headers["content-length"]) < len(minified) / 2
        assert "max-age" in zipped.headers["cache-control"]
        etag = zipped.headers["etag"]
        plain = await http.get(url, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == minified
        again = await http.get(url, headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
