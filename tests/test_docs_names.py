"""
Every name the docs tell users to import or use from ``nucleus.stream``,
``nucleus.fortress``, ``nucleus.testing`` or ``nucleus.client`` is importable,
and every documented ``Name.attribute`` exists.

The scan covers README.md and docs/*.md (docs/api.md and the guide included):
``from nucleus.stream import ...`` in code blocks, ``nucleus.stream.X``
anywhere, the README's API table, and every ``Name(`` / ``Name.attr`` in inline
code and Python code blocks (the way the docs say "pass
``rate_limit=RateLimit(...)``") but for classes the document defines itself. A
capitalised name from another library is listed in :data:`OTHER_LIBRARIES`,
with where it comes from.

It covers examples/ too, which users copy: what each imports from the public
modules, every attribute it uses on those names (``SocketMessage.json``), and
``nucleus.stream.X`` anywhere, read from its syntax tree.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))
MODULES = ("nucleus.stream", "nucleus.fortress", "nucleus.testing", "nucleus.client")

#: Capitalised names the docs mention that are not ours to export.
OTHER_LIBRARIES = {
    "FastAPI": "fastapi",
    "Mount": "starlette.routing",
    "Protocol": "websockets.protocol",
    "ProtocolError": "websockets.exceptions",
    "Request": "websockets.http11",
    "Signal": "the browser client, stream.js",
    "Starlette": "starlette.applications",
}

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_SPAN = re.compile(r"`([^`\n]+)`")
_IMPORT = re.compile(
    r"^\s*from\s+(nucleus\.(?:stream|fortress|testing|client))\s+import\s+"
    r"(?:\(([^)]*)\)|([^\n#]+))", re.M)
_QUALIFIED = re.compile(r"\b(nucleus\.(?:stream|fortress|testing|client))\.([A-Za-z_]\w*)")
# A capitalised name called or dereferenced: RateLimit(...), Fortress.query_token;
# not a file name (README.md, but SocketMessage.json(...) is a call).
_USE = re.compile(
    r"(?<![\w.])([A-Z]\w*)(?:\s*\(|\.(?!(?:md|py|txt|toml)\b|json\b(?!\())([a-zA-Z_]\w*))")
_DEFINED = re.compile(r"^\s*class\s+(\w+)", re.M)


@dataclass(frozen=True)
class Mention:
    """``name`` (and ``attribute`` of it, if any) documented at ``where``."""

    where: str
    name: str
    attribute: str | None = None
    module: str | None = None  # None: from either of MODULES


def mentions(text: str, where: str) -> list[Mention]:
    """What one markdown document tells users to import or use."""
    found: list[Mention] = []
    prose = _FENCE.sub("", text)
    blocks = _FENCE.findall(text)
    # A class the document defines in one block may be used in a later one
    # (the guide's snippets build on each other).
    defined = {name for lang, block in blocks if lang in ("python", "py")
               for name in _DEFINED.findall(block)}
    for lang, block in blocks:
        for module, *names in _IMPORT.findall(block):
            for entry in "".join(names).split(","):
                if name := entry.split(" as ")[0].strip():
                    found.append(Mention(where, name, module=module))
        if lang in ("python", "py"):
            found += [Mention(where, name, attr or None) for name, attr in _USE.findall(block)
                      if name not in defined]
    for module, name in _QUALIFIED.findall(text):
        found.append(Mention(where, name, module=module))
    for span in _SPAN.findall(prose):
        found += [Mention(where, name, attr or None) for name, attr in _USE.findall(span)]
    found += [Mention(where, name, module="nucleus.stream") for name in api_table(text)]
    return [m for m in found if m.name not in OTHER_LIBRARIES]


def example_mentions(source: str, where: str) -> list[Mention]:
    """What an example imports from the public modules, and the attributes it uses on them."""
    tree = ast.parse(source)
    imported: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in MODULES:
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module, alias.name)
    found = [Mention(where, name, module=module) for module, name in imported.values()]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported):
            module, name = imported[node.value.id]
            found.append(Mention(where, name, node.attr, module))
    found += [Mention(where, name, module=module) for module, name in _QUALIFIED.findall(source)]
    return found


def api_table(text: str) -> list[str]:
    """The names in the first column of the table under "## The API", if there is one."""
    section = re.search(r"^## The API\n(.*?)(?=^## )", text, re.S | re.M)
    if section is None:
        return []
    return re.findall(r"^\|\s*`(\w+)`\s*\|", section.group(1), re.M)


def missing(mention: Mention) -> str | None:
    """Why ``mention`` does not resolve, or None when it does."""
    for module in (mention.module,) if mention.module else MODULES:
        value = getattr(importlib.import_module(module), mention.name, None)
        if value is None:
            continue
        if mention.attribute is not None and not hasattr(value, mention.attribute):
            return f"{module}.{mention.name} has no attribute {mention.attribute!r}"
        return None
    return f"{mention.name} is not exported by {mention.module or ' or '.join(MODULES)}"


def all_mentions() -> list[Mention]:
    docs = [m for path in DOCS for m in mentions(path.read_text(), path.name)]
    return docs + [m for path in EXAMPLES
                   for m in example_mentions(path.read_text(), str(path.relative_to(ROOT)))]


def test_every_documented_name_is_importable() -> None:
    problems = sorted({f"{m.where}: {why}" for m in all_mentions() if (why := missing(m))})
    assert problems == [], (
        "the docs name what the package does not export (export it, fix the doc, or, "
        "for another library's name, add it to OTHER_LIBRARIES):\n" + "\n".join(problems))


def test_the_scan_finds_what_users_are_told_to_use() -> None:
    found = {(m.where, m.name) for m in all_mentions()}
    assert ("security.md", "RateLimit") in found  # route(..., rate_limit=RateLimit(...))
    assert ("security.md", "Fortress") in found
    assert ("README.md", "client_js_path") in found  # nucleus.stream.client_js_path()
    assert ("README.md", "StreamHub") in found  # the import and the API table
    assert ("client.md", "State") in found  # State.OPEN, from nucleus.client
    assert ("guide.md", "RevocationList") in found  # the guide's imports
    assert ("guide.md", "RateLimit") in found  # RateLimit(rate=5, ...) in a snippet
    assert ("deployment.md", "RedisBackend") in found  # the code pushing without sockets
    assert ("README.md", "Fortress") in found  # the feature table
    assert ("examples/starlette_app.py", "StreamServer") in found
    assert ("examples/apps/chat.py", "server") not in found  # only names of the four modules
    attributes = {(m.where, m.name, m.attribute) for m in all_mentions()}
    assert ("examples/chat_room.py", "SocketMessage", "json") in attributes
    assert ("api.md", "SocketMessage", "Binary") in attributes  # its prose, in inline code
    assert ("guide.md", "SocketMessage", "json") in attributes  # SocketMessage.json(...)


def test_the_readme_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    unlinked = [path.name for path in DOCS[1:] if f"](docs/{path.name})" not in readme]
    assert unlinked == [], f"README.md's Docs list has no link to {unlinked}"


@pytest.mark.parametrize("doc", [
    "```python\nfrom nucleus.stream import StreamServer, Nope\n```\n",
    "Call `nucleus.stream.nope()` first.\n",
    "Pass `route(..., limits=Nope(3))`.\n",
    "Use `Fortress.nope_token()`.\n",
    "## The API\n\n| | |\n|---|---|\n| `Nope` | things |\n\n## Next\n",
])
def test_a_missing_name_is_caught(doc: str) -> None:
    assert [why for m in mentions(doc, "doc.md") if (why := missing(m))] != []


@pytest.mark.parametrize("example", [
    "from nucleus.stream import Nope\n",
    "from nucleus.stream import SocketMessage\nSocketMessage.nope({})\n",
    "from nucleus.fortress import Fortress as F\nF.nope_token()\n",
    "import nucleus.stream\nnucleus.stream.nope()\n",
])
def test_a_missing_name_in_an_example_is_caught(example: str) -> None:
    assert [why for m in example_mentions(example, "x.py") if (why := missing(m))] != []
