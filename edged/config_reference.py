"""The configuration reference, rendered from the config structs themselves.

A hand-written reference drifts from the code: a key is added, renamed or given a new default and
the table in the README still says the old thing. Here every key, type and default comes from
msgspec's view of the structs in ``edged.config`` and every description from the docstring below
the field, so the reference cannot disagree with what the decoder accepts. ``edged config
reference`` (or ``python -m edged.config_reference``) prints it; a test checks that the README's
copy is current.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

import msgspec
import msgspec.inspect as mi

from edged.config import Config
from edged.durations import Duration
from edged.sizes import ByteSize

HEADING = "####"  # the reference sits under "### Configuration reference" in the README
COLUMNS = "| key | type | default | description |\n|---|---|---|---|"


@dataclass
class Section:
    """One struct and the TOML tables it is written as (TLS is both ``[redis.tls]`` and another)."""

    cls: type[msgspec.Struct]
    path: str
    """Dotted path of the first table, e.g. ``redis.sentinel``."""
    tables: list[str] = field(default_factory=list)
    """Headers as written in TOML: ``[redis.tls]``, ``[[streams]]``."""


# --------------------------------------------------------------------------- docstrings


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string literal right below it), base classes included.

    msgspec does not keep these, so the class source is parsed, once per class.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, msgspec.Struct) and klass is not msgspec.Struct:
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    node = tree.body[0]
    assert isinstance(node, ast.ClassDef)
    docs: dict[str, str] = {}
    for stmt, following in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(following.value.value)
    return docs


# --------------------------------------------------------------------------- walking the structs


def sections(root: type[msgspec.Struct] = Config) -> list[Section]:
    """Every table below ``root``, in file order; a struct used at several places is one section.

    ``root`` itself is left out: the top level of the file holds only tables.
    """
    found: dict[type, Section] = {root: Section(root, "")}
    _walk(root, "", found)
    return [s for s in found.values() if s.cls is not root]


def _walk(cls: type[msgspec.Struct], path: str, found: dict[type, Section]) -> None:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    for f in info.fields:
        child = f"{path}.{f.encode_name}" if path else f.encode_name
        for struct, array in _structs_in(f.type):
            table = f"[[{child}]]" if array else f"[{child}]"
            if struct in found:
                found[struct].tables.append(table)
                continue
            found[struct] = Section(struct, child, [table])
            _walk(struct, child, found)


def _structs_in(t: mi.Type) -> list[tuple[type[msgspec.Struct], bool]]:
    """The struct types a field can hold, each with whether it is an array of tables."""
    if isinstance(t, mi.Metadata):
        return _structs_in(t.type)
    if isinstance(t, mi.UnionType):
        return [s for member in t.types for s in _structs_in(member)]
    if isinstance(t, mi.ListType) and isinstance(t.item_type, mi.StructType):
        return [(t.item_type.cls, True)]
    if isinstance(t, mi.StructType):
        return [(t.cls, False)]
    return []


# --------------------------------------------------------------------------- cells


def type_text(t: mi.Type, where: str) -> str:
    """A human name of the type: "duration", "int ≥ 1", "list of host:port"..."""
    if isinstance(t, mi.Metadata):
        kind = (t.extra or {}).get("kind")
        return str(kind) if kind else type_text(t.type, where)
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        return " or ".join(type_text(m, where) for m in members)
    if isinstance(t, mi.StructType):
        return f"table `[{where}]`"
    if isinstance(t, mi.ListType):
        item = "strings" if isinstance(t.item_type, mi.StrType) else type_text(t.item_type, where)
        return ("non-empty list of " if t.min_length else "list of ") + item
    if isinstance(t, mi.LiteralType):
        return "one of " + " | ".join(json.dumps(v) for v in t.values)
    return _scalar_text(t)


def _scalar_text(t: mi.Type) -> str:
    if isinstance(t, mi.StrType):
        return "non-empty string" if t.min_length else "string"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        if t.ge is not None and t.le is not None:
            return f"int {t.ge} to {t.le}"
        if t.ge is not None:
            return f"int ≥ {t.ge}"
        return "int"
    if isinstance(t, mi.CustomType):
        return "duration" if t.cls is Duration else t.cls.__name__.lower()
    return type(t).__name__.removesuffix("Type").lower()


def default_text(f: mi.Field) -> str:
    """The default as written in TOML (`"30s"`, `16`, `true`), "required" or "not set"."""
    if f.required:
        return "required"
    value = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
    if value is None:
        return "not set"
    return f"`{toml_literal(value)}`"


def toml_literal(value: Any) -> str:
    """``value`` written as a TOML value; durations as their strings."""
    if isinstance(value, Duration | ByteSize):
        return json.dumps(str(value))
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value, enc_hook=str)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def one_line(doc: str) -> str:
    """A docstring as one markdown line: whitespace collapsed, ``code`` in single backticks."""
    return re.sub(r"``(.+?)``", r"`\1`", " ".join(doc.split()))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- rendering


def render_section(section: Section) -> str:
    """One table's heading, the struct's docstring and a row per key."""
    info = mi.type_info(section.cls)
    assert isinstance(info, mi.StructType)
    docs = field_docs(section.cls)
    heading = f"{HEADING} " + ", ".join(f"`{t}`" for t in section.tables)
    lines = [heading, "", one_line(inspect.getdoc(section.cls) or ""), "", COLUMNS]
    for f in info.fields:
        cells = [
            f"`{f.encode_name}`",
            type_text(f.type, f"{section.path}.{f.encode_name}"),
            default_text(f),
            one_line(docs.get(f.name, "")),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def render_markdown() -> str:
    """The whole configuration reference as markdown, ending with a newline; deterministic."""
    return "\n\n".join(render_section(s) for s in sections()) + "\n"


def main() -> None:
    """``python -m edged.config_reference``: print the reference."""
    print(render_markdown(), end="")


if __name__ == "__main__":
    main()
