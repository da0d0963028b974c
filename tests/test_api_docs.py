"""
docs/api.md is what ``python -m nucleus._apidoc`` renders from the code today,
and it shows every public name of the four public modules.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nucleus.stream
from nucleus import _apidoc
from nucleus._rest import markdown
from nucleus.stream import StreamHub

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"
MODULES = ("nucleus.stream", "nucleus.fortress", "nucleus.testing", "nucleus.client")


def test_api_md_is_up_to_date() -> None:
    fresh, committed = _apidoc.render(), API_MD.read_text(encoding="utf-8")
    if fresh != committed:
        diff = difflib.unified_diff(committed.splitlines(), fresh.splitlines(),
                                    "docs/api.md", "rendered now", lineterm="", n=1)
        pytest.fail("docs/api.md is out of date: run make api-docs\n"
                    + "\n".join(list(diff)[:60]))


def test_every_public_name_has_an_entry_under_its_module() -> None:
    text = API_MD.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, re.S | re.M))
    assert set(sections) == set(MODULES)
    for module_name in MODULES:
        module = __import__(module_name, fromlist=["__all__"])
        headings = set(re.findall(r"^#### (\w+)$", sections[module_name], re.M))
        assert set(module.__all__) <= headings, f"{module_name}: {set(module.__all__) - headings}"


def test_the_page_depends_on_nothing_of_this_machine() -> None:
    text = API_MD.read_text(encoding="utf-8")
    assert " at 0x" not in text and str(ROOT) not in text


def test_a_name_exported_but_not_placed_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nucleus.stream, "__all__", [*nucleus.stream.__all__, "Nope"])
    with pytest.raises(_apidoc.UndocumentedError, match=r"nucleus.stream: Nope not in LAYOUT"):
        _apidoc.render()


def test_an_undocumented_public_method_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def flush(self: StreamHub) -> None:
        pass

    monkeypatch.setattr(StreamHub, "flush", flush, raising=False)
    with pytest.raises(_apidoc.UndocumentedError, match=r"StreamHub\.flush: no docstring"):
        _apidoc.render()


def test_check_fails_on_a_stale_file_and_names_the_fix(tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    stale.write_text("# API reference\n", encoding="utf-8")
    command = [sys.executable, "-m", "nucleus._apidoc", "--check", "--out", str(stale)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "out of date: run make api-docs" in result.stderr
    assert stale.read_text(encoding="utf-8") == "# API reference\n"  # --check writes nothing


@pytest.mark.parametrize(("rest", "expected"), [
    ("Raises :class:`~nucleus.stream.BackendError` if ``x``.",
     "Raises `BackendError` if `x`.\n"),
    ("See :meth:`StreamHub.join_room`.", "See `StreamHub.join_room`.\n"),
    ("Like this::\n\n    await hub.start()\n\n    await hub.aclose()\n\nThen more.",
     "Like this:\n\n```python\nawait hub.start()\n\nawait hub.aclose()\n```\n\nThen more.\n"),
    ("The tree::\n\n    A\n    └── B", "The tree:\n\n```text\nA\n└── B\n```\n"),
    ("Owns\n    * rooms;\n    * users.", "**Owns**\n\n* rooms;\n* users.\n"),
    ("Where\n    ``a``\n        first\n    ``b``\n        second",
     "**Where**\n\n- **`a`**: first\n- **`b`**: second\n"),
    ("====  ====\nname  use\n====  ====\n``x``   one\n====  ====",
     "| name | use |\n|---|---|\n| `x` | one |\n"),
])
def test_rest_becomes_markdown(rest: str, expected: str) -> None:
    assert markdown(rest) == expected
