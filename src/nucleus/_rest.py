"""
reST as the docstrings of this package write it, as Markdown (for docs/api.md).

Only what the docstrings use: ````literals```` and roles (``:class:`X```) become
inline code; an indented block (after a paragraph ending in ``::``, or bare)
becomes a fenced code block, Python when it parses as Python; a definition list
(a term, its body indented under it) becomes bold terms; a simple table (rules
of ``=``) becomes a Markdown table. Must never drop text it does not recognize:
anything else passes through.
"""

from __future__ import annotations

import ast
import re
import textwrap

__all__ = ["inline", "markdown"]


def markdown(text: str) -> str:
    """reST as the docstrings write it, as Markdown."""
    out: list[str] = []
    code: list[str] = []  # indented blocks (after "::", or bare) in a row: one code block
    for block in [*re.split(r"\n[ \t]*\n", text.strip("\n")), ""]:
        if block.startswith((" ", "\t")):
            code.append(block)
            continue
        if code:
            body = textwrap.dedent("\n\n".join(code))
            out.append(f"```{_language(body)}\n{body}\n```")
            code = []
        if _TABLE_RULE.match(block.split("\n")[0]):
            out.append(_table(block))
        elif block:
            out.append(_definitions(re.sub(r"\s*::$", ":", block.rstrip())))
    return "\n\n".join(out) + "\n" if out else ""


def _definitions(block: str, nested: bool = False) -> str:
    """A reST definition list (a term, its body indented under it): bold terms."""
    lines = block.split("\n")
    term, rest = lines[0], lines[1:]
    if not rest or term.startswith((" ", "* ", "- ")) or not all(
            line.startswith(" ") for line in rest):
        return inline(block)
    body = textwrap.dedent("\n".join(rest))
    if not any(line.startswith(" ") for line in body.split("\n")) or body.startswith("* "):
        inner = inline(body)
    else:  # its body is a definition list too: one item per term
        items = [item for item in re.split(r"(?m)^(?=\S)", body) if item.strip()]
        inner = "\n".join(_definitions(item.rstrip("\n"), nested=True) for item in items)
    if nested:
        return f"- **{inline(term)}**: " + inner.replace("\n", "\n  ")
    return f"**{inline(term)}**\n\n{inner}"


_TABLE_RULE = re.compile(r"^=+(?: +=+)+$")


def _table(block: str) -> str:
    """A reST simple table (rules of ``=``, one line per row) as a Markdown table."""
    lines = block.split("\n")
    starts = [match.start() for match in re.finditer(r"=+", lines[0])]
    rows = [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
            for line in lines if not _TABLE_RULE.match(line)]
    cells = ["| " + " | ".join(inline(cell) for cell in row) + " |" for row in rows]
    return "\n".join([cells[0], "|" + "---|" * len(starts), *cells[1:]])


def inline(text: str) -> str:
    """Roles (``:class:`~a.B```) and literals (````x````) as inline code."""
    text = re.sub(r":[a-z]+:`!?~(?:[\w.]*\.)?([^`]+)`", r"`\1`", text)
    text = re.sub(r":[a-z]+:`!?([^`]+)`", r"`\1`", text)
    return re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)


def _language(code: str) -> str:
    try:
        ast.parse(code)
    except SyntaxError:
        return "text"
    return "python"
