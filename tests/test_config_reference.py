"""The configuration reference: rendered from the structs, complete, and what the README shows."""

from __future__ import annotations

import inspect
import re
import tomllib
from typing import Any

import msgspec
import pytest

import edged.config
from edged.config import Config, parse_config
from edged.config_reference import field_docs, render_markdown
from edged.errors import ConfigError
from tests.support import REPO

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
TABLE = re.compile(r"`(\[\[?[\w.-]+\]\]?)`")

# What a table needs besides the key under test; the reference must call exactly these required.
REQUIRED: dict[str, dict[str, Any]] = {
    "redis.sentinel": {"hosts": ["127.0.0.1:26379"], "service": "mymaster"},
    "redis.cluster": {"nodes": ["127.0.0.1:7000"]},
    "streams": {"stream": "s", "handler": "mypkg:handle"},
    "streams.handler": {"exec": ["/bin/true"]},
}


def config_structs() -> list[type[msgspec.Struct]]:
    """Every public struct of edged.config: a new one is covered without touching this test."""
    return [
        cls for name, cls in vars(edged.config).items()
        if inspect.isclass(cls) and issubclass(cls, msgspec.Struct)
        and cls.__module__ == edged.config.__name__ and not name.startswith("_")
    ]


def rendered_tables() -> dict[str, list[tuple[str, str, str]]]:
    """Table header (``[redis.tls]``, ``[[streams]]``) -> its rows (key, default, description)."""
    tables: dict[str, list[tuple[str, str, str]]] = {}
    headers: list[str] = []
    for line in render_markdown().splitlines():
        if line.startswith("#"):
            headers = TABLE.findall(line)
            for header in headers:
                tables[header] = []
        elif line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            for header in headers:
                tables[header].append((cells[0].strip("`"), cells[2], cells[3]))
    return tables


def _path(header: str) -> str:
    return header.strip("[]")


def _arrays() -> set[str]:
    return {_path(h) for h in rendered_tables() if h.startswith("[[")}


def _document(tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A config document with these tables (dotted paths) holding these keys; ``$`` paths too."""
    doc: dict[str, Any] = {}
    arrays = _arrays()
    for path in sorted(tables):  # parents before children
        node, parts = doc, path.split(".")
        for i, part in enumerate(parts):
            here = ".".join(parts[: i + 1])
            if here in arrays:
                node = node.setdefault(part, [{}])[0]
            else:
                child = node.get(part)
                node[part] = child = child if isinstance(child, dict) else {}
                node = child
        node.update(tables[path])
    return doc


def _where(path: str, key: str) -> str:
    arrays = _arrays()
    parts = path.split(".")
    dollar = "$"
    for i, part in enumerate(parts):
        dollar += f".{part}[0]" if ".".join(parts[: i + 1]) in arrays else f".{part}"
    return f"{dollar}.{key}"


def test_readme_shows_the_rendered_reference() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme.count(START) == 1 and readme.count(END) == 1, "README lost its reference markers"
    shown = readme.split(START + "\n", 1)[1].split(END, 1)[0]
    assert shown == render_markdown(), (
        "README's configuration reference is out of date: run `python -m edged.config_reference` "
        f"(or `edged config reference`) and paste its output between {START} and {END}"
    )


def test_rendering_is_deterministic() -> None:
    assert render_markdown() == render_markdown()


def test_every_field_of_every_config_struct_has_a_docstring() -> None:
    structs = config_structs()
    names = {cls.__name__ for cls in structs}
    assert {"TLSConfig", "SentinelConfig", "RedisConfig", "DaemonConfig", "ExecHandler",
            "StreamConfig", "Config"} <= names
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in structs for f in msgspec.structs.fields(cls)
        if not field_docs(cls).get(f.name, "").strip()
    ]
    assert not missing, f"config fields without a docstring (the string right below the field): {missing}"


def test_reference_lists_every_key_of_every_table() -> None:
    tables = rendered_tables()
    for cls in config_structs():
        keys = [f.encode_name for f in msgspec.structs.fields(cls)]
        if cls is Config:  # the top level holds only tables: each is a section of its own
            for key in keys:
                assert f"[{key}]" in tables or f"[[{key}]]" in tables, f"no section for {key}"
            continue
        shown = [sorted(k for k, _, _ in rows) for rows in tables.values()]
        assert sorted(keys) in shown, f"{cls.__name__}: no section lists exactly {keys}"
    for header, rows in tables.items():
        assert rows, f"{header} has no rows"
        assert all(description for _, _, description in rows), f"{header}: a key without description"


def test_every_rendered_key_is_decoded_where_the_reference_puts_it() -> None:
    # 0.5 fits no config type: a key the decoder knows fails its type check at its own path,
    # an unknown key fails as "unknown field" at its table's path instead.
    for header, rows in rendered_tables().items():
        for key, _, _ in rows:
            doc = _document({_path(header): {key: 0.5}})
            with pytest.raises(ConfigError) as info:
                parse_config(doc)
            assert f"at `{_where(_path(header), key)}`" in str(info.value), (header, key, str(info.value))


def test_rendered_defaults_are_the_decoders_defaults() -> None:
    with_defaults: dict[str, dict[str, Any]] = {}
    bare: dict[str, dict[str, Any]] = {}
    for header, rows in rendered_tables().items():
        path = _path(header)
        required = {key for key, default, _ in rows if default == "required"}
        assert required == set(REQUIRED.get(path, {})), f"{header}: required keys"
        bare[path] = dict(REQUIRED.get(path, {}))
        with_defaults[path] = dict(REQUIRED.get(path, {}))
        for key, default, _ in rows:
            if default.startswith("`"):
                with_defaults[path][key] = tomllib.loads(f"v = {default.strip('`')}")["v"]
            else:
                assert default in ("required", "not set"), (header, key, default)
    # [redis.sentinel] and [redis.cluster] exclude each other: one document with each.
    for other in ("redis.cluster", "redis.sentinel"):
        def without(tables: dict[str, dict[str, Any]], other: str = other) -> dict[str, Any]:
            return _document({p: t for p, t in tables.items()
                              if p != other and not p.startswith(other + ".")})
        assert parse_config(without(with_defaults)) == parse_config(without(bare))


def test_pipes_in_cells_are_escaped() -> None:
    codec = next(line for line in render_markdown().splitlines() if line.startswith("| `codec`"))
    assert '"json" \\| "msgpack" \\| "raw"' in codec
    assert len(re.split(r"(?<!\\)\|", codec)) == 6
