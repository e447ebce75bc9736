"""The names edged writes are a contract with operators' tools: pinned here, once.

Everything else (the Lua scripts, the CLI, the other tests) takes them from edged/keys.py.
"""

from __future__ import annotations

from edged import keys


def test_dead_letter_field_names_are_the_documented_ones() -> None:
    assert keys.DEAD_METADATA_FIELDS == (
        "edged-reason", "edged-stream", "edged-group", "edged-id", "edged-consumer",
        "edged-failed-at", "edged-deliveries",
    )
    assert keys.PAYLOAD_FIELD == "payload"


def test_key_names_live_under_the_prefix() -> None:
    assert keys.daemon_key("p:", "host-1") == "p:daemon:host-1"
    assert keys.daemons_pattern("p:") == "p:daemon:*"
    assert keys.seen_key("p:") == "p:seen"
    assert keys.default_dead_letter("orders") == "orders:dead"


def test_no_lua_script_spells_a_field_name_of_its_own() -> None:
    """The scripts take key and field names as KEYS and ARGV from keys.py."""
    from importlib import resources

    for script in resources.files("edged.lua").iterdir():
        if script.name.endswith(".lua"):
            text = script.read_text()
            assert "'edged-" not in text and "'instance'" not in text, script.name
