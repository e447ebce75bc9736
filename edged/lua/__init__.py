"""edged's Lua scripts, one file each; ``source`` is the only way they are loaded.

Each script makes an ownership check and its action one atomic step (see scripts.py). Key and
field names come in as KEYS and ARGV, from edged.keys: no script spells a name of its own.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text()
