"""
``python -m nucleus._apidoc``: writes docs/api.md, the API reference, from the code.

Owns the layout of the reference: every name in the ``__all__`` of the public
modules (:data:`LAYOUT`), grouped by concept, each with its signature
(:func:`inspect.signature`, annotations as written in the source) and its
docstring; for a class, its public methods, properties and attributes too.
An attribute's documentation is the ``#:`` comment above its assignment, as
Sphinx reads it. The reST of the docstrings becomes Markdown: literals and
roles become inline code, an indented block (after ``::``) a code block, a
definition list bold terms, a simple table a Markdown table.

Must never
    * leave a public name out: a name of ``__all__`` missing from the layout
      (or a layout name missing from ``__all__``) is an error, and so is a
      public name or member with no documentation;
    * write anything that depends on the machine (paths, addresses, dates), so
      that tests/test_api_docs.py can compare the file with a fresh rendering.

``--check`` writes nothing and exits 1 when docs/api.md is out of date
(``make api-docs`` rewrites it).
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import Any

from ._rest import markdown

__all__ = ["LAYOUT", "Group", "UndocumentedError", "render"]

OUTPUT = Path("docs") / "api.md"
WIDTH = 88


@dataclass(frozen=True)
class Group:
    """Names of one public module shown together; ``intro`` is a module whose docstring leads."""

    title: str
    names: tuple[str, ...]
    intro: str | None = None


#: Every public module, and its names in the order the reference shows them.
LAYOUT: dict[str, tuple[Group, ...]] = {
    "nucleus.stream": (
        Group("Serving", ("StreamServer", "Limits", "RateLimit", "HttpResponse",
                          "client_js_path", "CLIENT_JS_ROUTE", "CLIENT_TYPES_ROUTE",
                          "SUBPROTOCOL")),
        Group("Handlers and sockets", ("StreamHandler", "WebSocket", "HandshakeRequest",
                                       "Headers")),
        Group("Messages", ("SocketMessage", "decode_as")),
        Group("The hub", ("StreamHub", "Channel")),
        Group("History", ("HistoryPolicy", "Publication", "Recovery")),
        Group("Backends", ("Backend", "MemoryBackend", "RedisBackend", "backend_from_url")),
        Group("Errors", ("StreamError", "MessageError", "EncodeError", "InvalidMessage",
                         "SocketNotFound", "SocketClosed", "ChannelError", "RouteError",
                         "ConfigError", "RequestError", "BackendError", "BackendUnavailable"),
              intro="nucleus.stream._errors"),
    ),
    "nucleus.fortress": (
        Group("Tokens", ("Fortress", "TokenClaims", "RevocationList")),
        Group("Authenticating handshakes", ("TokenAuth", "TokenSource")),
        Group("Constants", ("SECRET_ENV", "SYMMETRIC_ALGORITHMS", "TOKEN_SUBPROTOCOL_PREFIX",
                            "DEFAULT_COOKIE")),
    ),
    "nucleus.testing": (
        Group("Testing handlers in-process", ("TestClient", "TestSocket", "nucleus_client",
                                              "HandshakeRefused")),
    ),
    "nucleus.client": (
        Group("Connecting", ("connect", "Stream", "State")),
        Group("Receiving", ("Subscription", "DirectMessages", "Meta", "Gap", "ErrorInfo")),
        Group("Errors", ("StreamError", "ClientError", "RequestFailed", "SendQueueFull",
                         "StreamClosed", "SubscriptionRefused", "InvalidMessage"),
              intro="nucleus.client._errors"),
    ),
}

HEADER = """\
# API reference

Every public name of `nucleus.stream`, `nucleus.fortress`, `nucleus.testing` and
`nucleus.client`: its signature and what it does. This page is generated from the
docstrings by `make api-docs` (`python -m nucleus._apidoc`), and
`tests/test_api_docs.py` fails when it is out of date: edit the docstrings, not this
file. The guides are in the [README](../README.md) and the other pages of `docs/`.
"""


class UndocumentedError(Exception):
    """Public names or members the reference cannot describe; the message lists them."""


def render(*, strict: bool = True) -> str:
    """The whole reference, as Markdown; :class:`UndocumentedError` if something is missing."""
    problems: list[str] = []
    shown: dict[int, str] = {}  # id(object) -> where it is documented
    out = [HEADER, _contents()]
    for module_name, groups in LAYOUT.items():
        module = importlib.import_module(module_name)
        listed = [name for group in groups for name in group.names]
        exported = list(getattr(module, "__all__", ()))
        if extra := sorted(set(exported) - set(listed)):
            problems.append(f"{module_name}: {', '.join(extra)} not in LAYOUT (nucleus/_apidoc.py)")
        if gone := sorted(set(listed) - set(exported)):
            problems.append(f"{module_name}: {', '.join(gone)} in LAYOUT but not in __all__")
        out.append(f"## {module_name}\n\n{markdown(_doc(module))}")
        for group in groups:
            out.append(f"### {group.title}\n")
            if group.intro is not None:
                intro = inspect.getdoc(importlib.import_module(group.intro)) or ""
                out.append(markdown(intro.partition("\n\n")[2]))
            for name in group.names:
                if name not in exported:
                    continue
                value = getattr(module, name)
                if (where := shown.get(id(value))) is not None and not _is_constant(value):
                    out.append(f"#### {name}\n\nThe same class as [`{where}`]"
                               f"(#{_anchor(name)}), re-exported here.\n")
                    continue
                shown[id(value)] = f"{module_name}.{name}"
                out.append(_entry(module, name, value, problems))
    if problems and strict:
        raise UndocumentedError("the API reference cannot be generated:\n  "
                                + "\n  ".join(problems))
    return "\n".join(part.rstrip() + "\n" for part in out if part.strip())


def _contents() -> str:
    lines = ["Contents:", ""]
    for module_name, groups in LAYOUT.items():
        lines.append(f"- [`{module_name}`](#{_anchor(module_name)})")
        for group in groups:
            links = ", ".join(f"[{name}](#{_anchor(name)})" for name in group.names)
            lines.append(f"  - {group.title}: {links}")
    return "\n".join(lines) + "\n"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


# one public name


def _entry(module: ModuleType, name: str, value: Any, problems: list[str]) -> str:
    where = f"{module.__name__}.{name}"
    if inspect.isclass(value):
        return _class(name, value, problems)
    if callable(value):
        doc = _doc(value)
        if not doc:
            problems.append(f"{where}: no docstring")
        return f"#### {name}\n\n{_code(_function_head(name, value))}\n{markdown(doc)}"
    doc = _constant_docs(module).get(name, "")
    if not doc:
        problems.append(f"{where}: no `#:` comment above its assignment")
    return f"#### {name}\n\n{_code(f'{name} = {_value(value)}')}\n{markdown(doc)}"


def _class(name: str, cls: type, problems: list[str]) -> str:
    doc = _doc(cls)
    if not doc:
        problems.append(f"{cls.__module__}.{cls.__qualname__}: no docstring")
    bases = [_annotation(base) for base in vars(cls).get("__orig_bases__", cls.__bases__)
             if base is not object and not getattr(base, "__name__", "").startswith("_")]
    head = f"class {name}({', '.join(bases)})" if bases else f"class {name}"
    code = [f"{head}:"]
    if (init := _constructor(cls)) is not None:
        code.append(textwrap.indent(_wrap("def __init__", ["self", *init], ""), "    "))
    else:
        code[0] += " ..."
    parts = [f"#### {name}\n", _code("\n".join(code)), markdown(doc)]
    if issubclass(cls, enum.Enum):
        parts.append("Members: " + ", ".join(f"`{m.name}` (`{m.value!r}`)" for m in cls) + ".\n")
    parts += list(_members(name, cls, problems))
    return "\n".join(parts)


def _constructor(cls: type) -> list[str] | None:
    """The parameters of ``cls(...)``, unless it takes whatever its builtin base takes."""
    if issubclass(cls, enum.Enum):
        return None
    owner = next((klass for klass in cls.__mro__ if "__init__" in vars(klass)), object)
    if owner.__module__ == "builtins" or owner.__module__.startswith("typing"):
        return None
    try:
        signature = inspect.signature(cls)
    except ValueError:
        return None
    return _parameters(signature)


def _members(owner: str, cls: type, problems: list[str]) -> Iterator[str]:
    """Attributes first (``#:`` comments, slots, class data), then methods and properties."""
    comments = _attribute_docs(cls)
    dataclass_fields = {f.name for f in fields(cls)} if is_dataclass(cls) else set()
    # Instance attributes set in __init__ are in no namespace: only their comment knows them.
    members: dict[str, Any] = {name: None for name in comments if name not in vars(cls)}
    members |= {name: raw for name, raw in vars(cls).items() if not _is_enum_member(cls, raw)}
    callables = (FunctionType, property, staticmethod, classmethod, type)
    commented = list(comments)  # in source order
    ordered = sorted(members.items(), key=lambda item: (
        isinstance(item[1], callables),
        commented.index(item[0]) if item[0] in comments else len(commented)))
    implemented: dict[type, list[str]] = {}
    for name, raw in ordered:
        if name.startswith("_") or (name in dataclass_fields and name not in comments):
            continue
        doc = comments[name][0] if name in comments else _own_doc(raw)
        if not doc and (base := _documented_base(cls, name)) is not None:
            implemented.setdefault(base, []).append(name)
            continue
        if not doc:
            problems.append(f"{cls.__module__}.{cls.__qualname__}.{name}: no docstring")
        head = _member_head(cls, name, raw, comments.get(name, ("", None))[1])
        yield f"##### {owner}.{name}\n\n{_code(head)}\n{markdown(doc)}"
    for base, names in implemented.items():
        listed = ", ".join(f"`{name}`" for name in names)
        if base.__name__ in _exported_names():
            yield f"Implements `{base.__name__}`, documented there: {listed}.\n"
        else:
            summary = markdown(_doc(base).split("\n\n")[0]).strip().replace("\n", " ")
            yield (f"Implements `{base.__name__}` (`{base.__module__}`, not exported; its "
                   f"docstrings describe them): {listed}. `{base.__name__}`: {summary}\n")


def _is_enum_member(cls: type, raw: Any) -> bool:
    return isinstance(cls, enum.EnumMeta) and isinstance(raw, cls)


def _member_head(cls: type, name: str, raw: Any, annotation: str | None) -> str:
    if isinstance(raw, property):
        hints = inspect.signature(raw.fget).return_annotation if raw.fget else ""
        kind = "property" if raw.fset is None else "property, settable"
        return f"{name}: {_annotation(hints)}  # {kind}"
    if isinstance(raw, staticmethod | classmethod):
        function = getattr(cls, name)
        prefix = "@staticmethod\n" if isinstance(raw, staticmethod) else "@classmethod\n"
        return prefix + _function_head(name, function)
    if inspect.isclass(raw):
        init = _constructor(raw)
        return f"class {name}({', '.join(init or ())})"
    if inspect.isfunction(raw):
        signature = inspect.signature(raw)
        params = list(signature.parameters.values())[1:]  # self
        return _function_head(name, raw, signature.replace(parameters=params))
    annotation = annotation or inspect.get_annotations(cls).get(name)
    typed = f": {_annotation(annotation)}" if annotation else ""
    if raw is None or inspect.isdatadescriptor(raw):  # an instance attribute
        return name + typed
    return f"{name}{typed} = {_value(raw)}"


def _documented_base(cls: type, name: str) -> type | None:
    """The class above ``cls`` that documents ``name``, for overrides that don't repeat it."""
    for base in cls.__mro__[1:]:
        if base is object or name not in vars(base):
            continue
        if _own_doc(vars(base)[name]) or name in _attribute_docs(base):
            return base
    return None


def _exported_names() -> set[str]:
    return {name for module in LAYOUT for name in importlib.import_module(module).__all__}


# signatures


class _Text:
    """Shown as its text by :class:`inspect.Parameter`: an annotation or default as written."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _function_head(name: str, function: Any, signature: inspect.Signature | None = None) -> str:
    function = inspect.unwrap(function)
    if signature is None:
        signature = inspect.signature(function)
    keyword = ("async def" if inspect.iscoroutinefunction(function)
               or inspect.isasyncgenfunction(function) else "def")
    returns = signature.return_annotation
    arrow = "" if returns is inspect.Signature.empty else f" -> {_annotation(returns)}"
    return _wrap(f"{keyword} {name}", _parameters(signature), arrow)


def _parameters(signature: inspect.Signature) -> list[str]:
    shown: list[str] = []
    kinds = inspect.Parameter
    previous: Any = None
    for param in signature.parameters.values():
        if previous is kinds.POSITIONAL_ONLY and param.kind is not kinds.POSITIONAL_ONLY:
            shown.append("/")
        if param.kind is kinds.KEYWORD_ONLY and previous not in (kinds.KEYWORD_ONLY,
                                                                 kinds.VAR_POSITIONAL):
            shown.append("*")
        param = param.replace(
            annotation=(param.empty if param.annotation is param.empty
                        else _Text(_annotation(param.annotation))),
            default=param.empty if param.default is param.empty else _Text(_value(param.default)))
        shown.append(str(param))
        previous = param.kind
    if previous is kinds.POSITIONAL_ONLY:
        shown.append("/")
    return shown


def _wrap(head: str, params: Sequence[str], tail: str) -> str:
    line = f"{head}({', '.join(params)}){tail}"
    if len(line) <= WIDTH or not params:
        return line
    return head + "(\n" + "".join(f"    {param},\n" for param in params) + f"){tail}"


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, str):
        return re.sub(r"(?<![\w.])_[A-Za-z]\w*", _public_alias, annotation)
    if inspect.isclass(annotation):
        return annotation.__qualname__
    return re.sub(r"\b(?:typing|collections\.abc)\.|~", "", repr(annotation))


def _public_alias(match: re.Match[str]) -> str:
    """``_Text`` (a private alias the code needs) as the class's own name, ``Text``."""
    for name, module in list(sys.modules.items()):
        value = vars(module).get(match.group()) if name.startswith("nucleus") else None
        if inspect.isclass(value) and not value.__name__.startswith("_"):
            return value.__name__
    return match.group()


def _value(value: Any) -> str:
    """A default or constant as source would write it (no addresses in reprs)."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, tuple):
        items = [_value(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, FunctionType | BuiltinFunctionType) or inspect.isclass(value):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def _is_constant(value: Any) -> bool:
    return not (inspect.isclass(value) or callable(value))


# documentation text


def _doc(value: Any) -> str:
    return inspect.getdoc(value) or ""


def _own_doc(raw: Any) -> str:
    """A member's own docstring, not one inherited from its type (``int``, ``bool``...)."""
    if isinstance(raw, staticmethod | classmethod):
        raw = raw.__func__
    if isinstance(raw, property):
        raw = raw.fget
    if isinstance(raw, FunctionType) or inspect.isclass(raw):
        return inspect.cleandoc(raw.__doc__ or "")
    if inspect.isdatadescriptor(raw) and type(raw).__name__ == "member_descriptor":
        return inspect.cleandoc(raw.__doc__ or "")
    return ""


_COMMENTED = re.compile(
    r"((?:^[ \t]*#:.*\n)+)[ \t]*(?:self\.)?([A-Za-z_]\w*)[ \t]*(?::[ \t]*([^=\n]+?))?[ \t]*(?:=|$)",
    re.M)


def _attribute_docs(owner: ModuleType | type) -> dict[str, tuple[str, str | None]]:
    """``#:`` comments above assignments in ``owner``'s source, and the annotations there."""
    try:
        source = inspect.getsource(owner)
    except (OSError, TypeError):
        return {}
    docs: dict[str, tuple[str, str | None]] = {}
    for comment, name, annotation in _COMMENTED.findall(source):
        text = " ".join(line.strip()[2:].strip() for line in comment.splitlines())
        docs.setdefault(name, (text, annotation or None))
    return docs


def _constant_docs(module: ModuleType) -> dict[str, str]:
    """``#:`` comments of the module and of the submodules it exports names from."""
    docs: dict[str, str] = {}
    for name, loaded in sorted(sys.modules.items()):
        if name == module.__name__ or name.startswith(module.__name__ + "."):
            docs = {attr: doc for attr, (doc, _) in _attribute_docs(loaded).items()} | docs
    return docs


def _code(text: str) -> str:
    return f"```python\n{text}\n```\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nucleus._apidoc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    try:
        text = render()
    except UndocumentedError as exc:
        print(exc, file=sys.stderr)
        return 2
    current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
    if args.check:
        if current != text:
            print(f"{args.out} is out of date: run make api-docs", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
