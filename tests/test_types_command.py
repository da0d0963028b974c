"""
``nucleus types``: the message models of an app's routes as JSON Schema and TypeScript.

The TypeScript compiles, under ``--strict``, with a page that uses it with the
client's ``subscribe<T>``, ``send`` and ``request``; each wrong use of a field
is a compile error on its line; and the types accept exactly the sample
messages that the server's own validation (``decode_as``) accepts.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nucleus import cli
from nucleus._schema import message_schema
from nucleus._typegen import typescript
from nucleus.stream import InvalidMessage, decode_as

from .apps import typed
from .tsc import ROOT, TS_DIR, compile_ts, without_expect_errors

APP = "tests.apps.typed:server"


def nucleus(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = cli.main(list(argv))
    except SystemExit as exit:
        status = int(exit.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def generate(capsys: pytest.CaptureFixture[str], into: Path) -> Path:
    """``nucleus types APP --out into/messages.d.ts``, as a page's build would run it."""
    out = into / "messages.d.ts"
    assert nucleus(capsys, "types", APP, "--out", str(out)) == (0, "", "")
    return out


def test_typescript_goes_to_stdout_one_declaration_per_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = nucleus(capsys, "types", APP)
    assert (status, err) == (0, "")
    assert out.startswith(f"// Message models of {APP}, as TypeScript types.\n")
    for model in ("ChatMessage", "Attachment", "Text", "Sticker", "Order", "Category", "Cursor"):
        assert out.count(f"export interface {model} {{") == 1
    assert 'export type Mood = "calm" | "loud";' in out
    assert "The message_model of routes /ws/board, /ws/board-replay." in out


def test_json_schema_is_one_document_with_every_model_as_its_library_describes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    out = tmp_path / "messages.schema.json"
    assert nucleus(capsys, "types", APP, "--format", "json-schema", "--out", str(out)) == (
        0, "", "")
    document = json.loads(out.read_text())
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    defs = document["$defs"]
    assert set(defs) == {"ChatMessage", "Text", "Sticker", "Mood", "Attachment", "Cursor",
                         "Order", "Category"}
    _, msgspec_defs = msgspec.json.schema_components([typed.ChatMessage])
    assert {**msgspec_defs["ChatMessage"], "$comment": "The message_model of route /ws/chat."
            } == defs["ChatMessage"]
    pydantic_schema = typed.Order.model_json_schema()
    assert defs["Order"]["properties"] == pydantic_schema["properties"]
    assert defs["Order"]["required"] == ["item"]


def test_a_page_using_the_generated_types_compiles_strict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    generate(capsys, tmp_path)
    page = Path(shutil.copy(TS_DIR / "typed_page.ts", tmp_path))
    compiled = compile_ts(tmp_path, page)
    assert compiled.returncode == 0, compiled.output


def test_each_wrong_use_of_a_field_fails_to_compile_on_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    generate(capsys, tmp_path)
    misuse, marked = without_expect_errors(TS_DIR / "typed_misuse.ts", tmp_path)
    assert len(marked) >= 10
    compiled = compile_ts(tmp_path, misuse)
    assert compiled.returncode != 0
    assert compiled.error_lines(misuse) == marked, compiled.output


TEXT = {"type": "text", "body": "hi"}

#: (model, message, whether the server accepts it): each within what TypeScript can say.
SAMPLES: list[tuple[str, dict[str, Any], bool]] = [
    ("ChatMessage", {"user": "ann", "content": TEXT}, True),
    ("ChatMessage", {"user": "bob", "content": {"type": "sticker", "sticker_id": 3},
                     "mood": "loud", "reply_to": None, "attachments": [{"url": "/a", "size": 1}],
                     "position": [1.5, 2], "reactions": {"+1": 2},
                     "sent": "2024-05-01T12:00:00Z", "priority": 3}, True),
    ("ChatMessage", {"user": "ann"}, False),
    ("ChatMessage", {"user": None, "content": TEXT}, False),
    ("ChatMessage", {"user": "ann", "content": {"type": "video", "body": "hi"}}, False),
    ("ChatMessage", {"user": "ann", "content": {"type": "sticker", "body": "hi"}}, False),
    ("ChatMessage", {"user": "ann", "content": TEXT, "mood": "CALM"}, False),
    ("ChatMessage", {"user": "ann", "content": TEXT, "position": [1, 2, 3]}, False),
    ("ChatMessage", {"user": "ann", "content": TEXT, "attachments": [{"url": "/a"}]}, False),
    ("ChatMessage", {"user": "ann", "content": TEXT, "colour": "red"}, False),
    ("Order", {"item": "tea"}, True),
    ("Order", {"item": "tea", "size": None, "note": "green",
               "category": {"name": "drinks", "parent": {"name": "food"}}}, True),
    ("Order", {"quantity": 2}, False),
    ("Order", {"item": "tea", "size": "XL"}, False),
    ("Order", {"item": "tea", "category": {"parent": None}}, False),
    ("Cursor", {"x": 1, "y": 2.5}, True),
    ("Cursor", {"x": 1, "y": 2.5, "label": "ann"}, True),
    ("Cursor", {"x": 1}, False),
    ("Cursor", {"x": 1, "y": [2]}, False),
]


def accepted(model: str, message: dict[str, Any]) -> bool:
    try:
        decode_as(json.dumps(message), getattr(typed, model))
    except InvalidMessage:
        return False
    return True


def test_the_types_accept_exactly_what_the_server_accepts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    assert [accepted(model, message) for model, message, _ in SAMPLES] == [
        expected for _, _, expected in SAMPLES]
    generate(capsys, tmp_path)
    models = sorted({model for model, _, _ in SAMPLES})
    lines = [f'import type {{ {", ".join(models)} }} from "./messages";']
    for number, (model, message, ok) in enumerate(SAMPLES):
        if not ok:
            lines.append("// @ts-expect-error: the server refuses it")
        lines.append(f"export const sample{number}: {model} = {json.dumps(message)};")
    samples = tmp_path / "samples.ts"
    samples.write_text("\n".join(lines) + "\n")
    compiled = compile_ts(tmp_path, samples)
    assert compiled.returncode == 0, "\n".join([compiled.output, *lines])


class ChatMessage(msgspec.Struct):
    """The README's model."""

    user: str
    text: str


def test_the_readme_example_compiles(tmp_path: Path) -> None:
    section = (ROOT / "README.md").read_text().split("\n## Typed messages\n", 1)[1]
    found = re.search(r"```ts\n(.*?)```", section, re.DOTALL)
    assert found is not None
    messages = typescript(message_schema({"/ws/chat": ChatMessage}))
    (tmp_path / "messages.d.ts").write_text(messages)
    page = tmp_path / "readme.ts"
    page.write_text(found.group(1) + "declare function show(...parts: string[]): void;\n"
                    "export { stock };\n")
    compiled = compile_ts(tmp_path, page)
    assert compiled.returncode == 0, compiled.output


@pytest.mark.parametrize(("argv", "error"), [
    (["tests.apps.relay:server"],
     "no route of tests.apps.relay:server declares a message_model: nothing to export"),
    (["tests.apps.typed"], "expected module:attribute (e.g. app:server)"),
    (["tests.apps.typed:nothing"], "module 'tests.apps.typed' has no attribute 'nothing'"),
    ([APP, "--format", "yaml"], "argument --format: invalid choice: 'yaml'"),
    ([APP, "--out", "/nonexistent/messages.d.ts"],
     "cannot write /nonexistent/messages.d.ts: No such file or directory"),
])
def test_errors_are_one_line_and_exit_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], error: str,
) -> None:
    status, out, err = nucleus(capsys, "types", *argv)
    assert (status, out) == (2, "")
    assert err.startswith("nucleus types: error: ") and error in err
    assert err.count("\n") == 1
