"""
The browser client's TypeScript declarations (``static/stream.d.ts``), checked by tsc.

A page using the whole API compiles under ``--strict``; each mistake in
``typescript/misuse.ts`` is a compile error on its own line; and the
declarations name exactly what ``stream.js`` exports and returns, and every
property its JSDoc documents, so that a change to the client that leaves them
behind fails here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from pathlib import Path

from .tsc import ROOT, TS_DIR, compile_ts, without_expect_errors

STATIC = ROOT / "src" / "nucleus" / "stream" / "static"


def test_a_page_using_the_whole_client_api_compiles_strict(tmp_path: Path) -> None:
    compiled = compile_ts(tmp_path, TS_DIR / "page.ts")
    assert compiled.returncode == 0, compiled.output


def test_each_misuse_of_the_client_api_fails_to_compile_on_its_line(tmp_path: Path) -> None:
    misuse, marked = without_expect_errors(TS_DIR / "misuse.ts", tmp_path)
    assert len(marked) >= 20
    compiled = compile_ts(tmp_path, misuse)
    assert compiled.returncode != 0
    assert compiled.error_lines(misuse) == marked, compiled.output


def jsdoc_properties(source: str) -> dict[str, list[str]]:
    """``@typedef {object} Name`` blocks of ``source`` and the names of their ``@property`` s."""
    typedefs: dict[str, list[str]] = {}
    for block in re.split(r"@typedef\s+", source)[1:]:
        block = block.split("*/", 1)[0]
        head = re.match(r"\{object\}\s+(\w+)", block)
        if head is None:
            continue
        names = typedefs.setdefault(head.group(1), [])
        for tag in re.finditer(r"@property\s+\{", block):
            depth, at = 1, tag.end()
            while depth:  # the type may hold braces of its own
                depth += {"{": 1, "}": -1}.get(block[at], 0)
                at += 1
            names.append(re.match(r"\s*\[?(\w+)", block[at:]).group(1))  # type: ignore[union-attr]
    return typedefs


RUNTIME_NAMES = """
const client = await import(process.argv[1]);
const stream = client.connect("ws://127.0.0.1:9/");
stream.close();  // before it dials: nothing is opened
const signal = Object.getOwnPropertyNames(client.Signal.prototype)
  .filter((name) => name !== "constructor");
const exported = Object.keys(client);
console.log(JSON.stringify({ exported, stream: Object.keys(stream), signal }));
"""


def test_the_declarations_name_what_stream_js_exports_returns_and_documents(
    tmp_path: Path,
) -> None:
    script = STATIC / "stream.js"
    done = subprocess.run(
        ["node", "--input-type=module", "-e", RUNTIME_NAMES, script.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    )
    runtime = json.loads(done.stdout)
    documented = jsdoc_properties(script.read_text())
    assert "presenceDelay" in documented["StreamOptions"] and "subscribe" in documented["Stream"]

    def exactly(name: str, keys: str) -> str:
        fields = ", ".join(f"{json.dumps(key)}: true" for key in runtime[name])
        return f"export const {name}: Record<{keys}, true> = {{ {fields} }};"

    check = [
        'import * as client from "/nucleus/stream.js";',
        "type Keys<T> = T extends unknown ? keyof T : never;",
        "type Has<T, K extends Keys<T>> = K;",
        "// what stream.js has at run time, exactly",
        exactly("exported", "keyof typeof client"),
        exactly("stream", "Keys<client.Stream>"),
        exactly("signal", "Keys<client.Signal<0>>"),
        "// what its JSDoc documents, at least",
        *(f"export type {name} = Has<client.{name}, {' | '.join(map(json.dumps, properties))}>;"
          for name, properties in documented.items()),
    ]
    checked = tmp_path / "names.ts"
    checked.write_text("\n".join(check) + "\n")
    compiled = compile_ts(tmp_path, checked)
    assert compiled.returncode == 0, f"stream.d.ts is behind stream.js:\n{compiled.output}"


def test_the_declarations_are_in_the_wheel_next_to_the_client() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["nucleus.stream"]
    package = STATIC.parent
    for shipped in ("stream.js", "stream.d.ts"):
        relative = (STATIC / shipped).relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
