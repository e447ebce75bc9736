"""The per-user state directory: where the embedded server keeps its data and records its URL."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class EmbeddedRecord(msgspec.Struct):
    """What ``edged start --embedded`` leaves for the other commands to find its server."""

    url: str
    pid: int


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edged"


def record_path() -> Path:
    return state_dir() / "embedded.json"


def write_record(record: EmbeddedRecord) -> None:
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    tmp.replace(path)


def read_record() -> EmbeddedRecord | None:
    """The recorded embedded server, if its process still runs."""
    try:
        record = msgspec.json.decode(record_path().read_bytes(), type=EmbeddedRecord)
    except (OSError, msgspec.DecodeError):
        return None
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return record


def clear_record(pid: int) -> None:
    """Forget the record, if it still names the server with ``pid``."""
    path = record_path()
    try:
        record = msgspec.json.decode(path.read_bytes(), type=EmbeddedRecord)
    except (OSError, msgspec.DecodeError):
        return
    if record.pid == pid:
        path.unlink(missing_ok=True)
