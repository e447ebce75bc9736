"""The per-user state directory: where the embedded server (and the embedded cluster of
``edged start --embedded --cluster``) keeps its data and records how to reach it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import msgspec


class EmbeddedRecord(msgspec.Struct):
    """What ``edged start --embedded`` leaves for the other commands to find its server."""

    url: str
    pid: int
    owner: int = 0
    """The pid of the ``edged start --embedded`` that started the server (0: unknown)."""
    data: str = ""
    """The server's data directory."""


class EmbeddedClusterRecord(msgspec.Struct):
    """What ``edged start --embedded --cluster`` leaves while its cluster runs: the seed nodes
    (``"host:port"``), the pid of each node process, and the config file it wrote for the other
    commands (``[redis.cluster]`` with the seeds, and the streams the daemon runs)."""

    nodes: list[str]
    pids: list[int]
    config: str


R = TypeVar("R", EmbeddedRecord, EmbeddedClusterRecord)


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edged"


def record_path() -> Path:
    return state_dir() / "embedded.json"


def cluster_record_path() -> Path:
    return state_dir() / "embedded-cluster.json"


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _write(path: Path, record: msgspec.Struct) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    tmp.replace(path)


def _load(path: Path, type_: type[R]) -> R | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=type_)
    except (OSError, msgspec.DecodeError):
        return None


def write_record(record: EmbeddedRecord) -> None:
    _write(record_path(), record)


def load_record() -> EmbeddedRecord | None:
    """The recorded embedded server, whether or not it (or its owner) still runs."""
    return _load(record_path(), EmbeddedRecord)


def read_record() -> EmbeddedRecord | None:
    """The recorded embedded server, if it and the daemon that started it still run. A server
    whose daemon is gone is stale: nothing would stop it (``edged embedded stop`` does)."""
    record = load_record()
    if record is None or not pid_running(record.pid):
        return None
    if record.owner and not pid_running(record.owner):
        return None
    return record


def clear_record(pid: int) -> None:
    """Forget the record, if it still names the server with ``pid``."""
    record = _load(record_path(), EmbeddedRecord)
    if record is not None and record.pid == pid:
        record_path().unlink(missing_ok=True)


def write_cluster_record(record: EmbeddedClusterRecord) -> None:
    _write(cluster_record_path(), record)


def load_cluster_record() -> EmbeddedClusterRecord | None:
    """The recorded embedded cluster, whether or not its nodes still run."""
    return _load(cluster_record_path(), EmbeddedClusterRecord)


def read_cluster_record() -> EmbeddedClusterRecord | None:
    """The recorded embedded cluster, if every one of its node processes still runs."""
    record = load_cluster_record()
    if record is None or not record.pids or not all(pid_running(p) for p in record.pids):
        return None
    return record


def clear_cluster_record(pids: list[int]) -> None:
    """Forget the cluster record, if it still names the nodes with ``pids``."""
    record = load_cluster_record()
    if record is not None and record.pids == pids:
        cluster_record_path().unlink(missing_ok=True)
