"""The configuration file: TOML decoded into frozen msgspec structs.

Every error names where it is: the file and the path of the field (``$.streams[0].claim-idle``).
Secrets are never stored here: only the paths of the files that hold them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import msgspec
import msgspec.inspect as mi
from msgspec import Meta

from edged.durations import Duration
from edged.errors import ConfigError
from edged.ids import MAX_SEQ, id_key, is_range_id
from edged.naming import dead_letter_names
from edged.sharding import MAX_SHARDS, hash_tag, shard_names
from edged.sizes import ByteSize

DEFAULT_CONFIG_PATH = Path("/etc/edged/edged.toml")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
URL_SCHEMES = ("redis", "rediss", "unix")

# Database numbers: Redis has `databases` (16 by default) of them and refuses a SELECT past its
# own count; a server may be configured with more, so edged does not stop at 15. Negative numbers
# never work, and anything above 65535 is a typo, not a server setting.
MAX_DB = 65535

PositiveInt = Annotated[int, Meta(ge=1)]
Concurrency = Annotated[int, Meta(ge=1, le=10_000)]
DbNumber = Annotated[int, Meta(ge=0, le=MAX_DB)]
NonEmpty = Annotated[str, Meta(min_length=1)]
Codec = Literal["json", "msgpack", "raw"]
# How the configuration reference (edged.config_reference) names these strings; no effect on decoding.
HostPort = Annotated[str, Meta(extra={"kind": "host:port"})]
Listen = Annotated[str, Meta(extra={"kind": 'host:port or ""'})]
RedisURL = Annotated[str, Meta(extra={"kind": "URL"})]
HandlerRef = Annotated[str, Meta(extra={"kind": '"module:function"'})]

# Entries handed back at shutdown are made to look idle for scripts.RELEASE_IDLE_MS (24 h), so
# that any peer's XAUTOCLAIM takes them at once. That only holds while every stream's claim-idle
# is below it: a longer claim-idle would leave released entries unclaimed until it passed.
MAX_CLAIM_IDLE = Duration(12 * 3600)


def _span(low: str, high: str) -> Meta:
    """A duration between ``low`` and ``high`` (inclusive): checked in every struct's
    ``__post_init__``, and shown as the type in the configuration reference."""
    span = f"{low} to {high}"
    bounds = (Duration.parse(low), Duration.parse(high), span)
    return Meta(extra={"kind": f"duration {span}", "bounds": bounds})


# Every duration has bounds: zero (or a few microseconds) turns a wait into a busy loop, and a
# huge value overflows what Redis takes (PEXPIRE, XAUTOCLAIM min-idle) or never comes round.
# The reasons for each are in the field docstrings (and so in the configuration reference).
ConnectTimeout = Annotated[Duration, _span("100ms", "10m")]
ShutdownGrace = Annotated[Duration, _span("0s", "1h")]
HeartbeatInterval = Annotated[Duration, _span("100ms", "10m")]
ConsumerExpiry = Annotated[Duration, _span("1s", "30d")]
ReadBlock = Annotated[Duration, _span("1ms", "1s")]
ExecTimeout = Annotated[Duration, _span("100ms", "1d")]
ClaimIdle = Annotated[Duration, _span("100ms", str(MAX_CLAIM_IDLE))]
ClaimInterval = Annotated[Duration, _span("100ms", "1h")]
RetryBackoff = Annotated[Duration, _span("10ms", "1h")]
RetryBackoffMax = Annotated[Duration, _span("10ms", "1d")]
Retention = Annotated[Duration, _span("1m", "3650d")]
TrimInterval = Annotated[Duration, _span("100ms", "1h")]
# Below the daemon's Redis socket timeout (read-block + 10s): a longer WAIT would be cut by it.
WaitTimeout = Annotated[Duration, _span("10ms", "10s")]
Size = Annotated[ByteSize, Meta(extra={"kind": 'size ("1GiB", "500MB")'})]


class FieldError(ValueError):
    """A bad value found by a struct's ``__post_init__``; ``field`` is where, relative to that
    struct (``start-id``, ``hosts[1]``, ``streams[2].dead-letter``). ``parse_config`` appends it
    to the path msgspec reports, so the message names the field itself, not only its table."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def config_error(source: str, path: str, reason: str) -> ConfigError:
    """The one shape of every config error, as msgspec words its own:
    ``FILE: reason - at `$.streams[0].handler```."""
    return ConfigError(f"{source}: {reason} - at `{path}`")


def _check_durations(struct: msgspec.Struct) -> None:
    """Every bounded duration of ``struct`` is within its bounds, or FieldError."""
    for attr, key, (low, high, span) in _duration_bounds(type(struct)):
        value: Duration | None = getattr(struct, attr)
        if value is not None and not low.seconds <= value.seconds <= high.seconds:
            raise FieldError(key, f'"{value}" is out of range: {key} must be from {span}')


@functools.cache
def _duration_bounds(cls: type) -> tuple[tuple[str, str, tuple[Duration, Duration, str]], ...]:
    """(attribute, key, (low, high, "low to high")) of each bounded duration field of ``cls``."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    found = []
    for f in info.fields:
        t = f.type
        if isinstance(t, mi.UnionType):  # an optional duration: its bounds are on the member
            t = next((m for m in t.types if isinstance(m, mi.Metadata)), t)
        extra = t.extra if isinstance(t, mi.Metadata) else None
        if extra and "bounds" in extra:
            found.append((f.name, f.encode_name, extra["bounds"]))
    return tuple(found)


_HOSTNAME = re.compile(
    r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?"
)
_PORT = re.compile(r"[0-9]{1,5}")


def _valid_port(text: str) -> bool:
    return _PORT.fullmatch(text) is not None and 0 < int(text) < 65536


def _valid_host(host: str) -> bool:
    """An IP address (IPv6 without brackets) or a host name (letters, digits, - and _)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return True


def _split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not sep or not _valid_port(port) or not _valid_host(host) or (bracketed and ":" not in host):
        raise ValueError(f"{text!r} is not host:port (a port from 1 to 65535; IPv6 in brackets)")
    return host, int(port)


def check_redis_url(url: str) -> None:
    """Raise ValueError saying what is wrong, unless ``url`` is a Redis URL redis-py can use.

    The message never repeats the URL nor any part of it but a plain scheme: a password may be in
    it (even where no password belongs, as in ``redis://user:secret/0`` with the ``@`` forgotten).
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError("not a URL: write redis://host:port/db, rediss://... or unix:///path")
    if scheme not in URL_SCHEMES:
        shown = repr(scheme) if scheme.isalnum() and len(scheme) <= 10 else "of the url"
        raise ValueError(f"url scheme {shown} is not one of redis://, rediss://, unix://")
    try:
        urlsplit(url)
    except ValueError:  # unbalanced [ ] around an IPv6 address
        raise ValueError("not a URL: unbalanced brackets around the host") from None
    problem = _unix_problem(url) if scheme == "unix" else _tcp_problem(url)
    if problem:
        raise ValueError(problem)


def _tcp_problem(url: str) -> str | None:
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        address, _, after = hostport[1:].partition("]")
        if not _valid_host(address) or (after and not after.startswith(":")):
            return "the host is not an IPv6 address in brackets"
        port = after[1:]
    else:
        port = hostport.rpartition(":")[2] if ":" in hostport else ""
    if port and not _valid_port(port):
        return "the port is not a number from 1 to 65535"
    if parts.path not in ("", "/") and not _valid_db(parts.path[1:]):
        return f"the path is not a database number (/0 to /{MAX_DB})"
    return _query_problem(parts.query)


def _unix_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.path:
        return "no socket path: write unix:///path/to/redis.sock"
    return _query_problem(parts.query)


def _query_problem(query: str) -> str | None:
    """Only ``?db=N`` may follow the URL: redis-py would pass any other option to every connection,
    overriding edged's own (protocol, timeouts), or fail on it when it first connects."""
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "db":
            return "a query option other than ?db=N is not supported"  # never quote it: a secret?
        if not _valid_db(value):
            return f"?db= is not a database number from 0 to {MAX_DB}"
    return None


def _valid_db(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= MAX_DB


def check_start_id(text: str) -> None:
    """Raise FieldError unless XGROUP CREATE takes ``text``: ``$``, or an id, its parts ≤ 2**64-1."""
    if text == "$" or (is_range_id(text) and max(id_key(text)) <= MAX_SEQ):
        return
    raise FieldError("start-id", f'"{text}" is not a stream id (use "$", "0" or <ms>-<seq>)')


def check_consumer_name(name: str) -> str | None:
    """Why Redis would refuse ``name`` as a consumer name of edged's, or None.

    edged names its connections ``edged:<consumer>``, and CLIENT SETNAME takes only printable
    ASCII without spaces: another name would fail on every connection.
    """
    for ch in name:
        if not "!" <= ch <= "~":
            return (f"{name!r} has {ch!r}: a consumer name is printable ASCII without spaces "
                    "(Redis connection names allow no other characters)")
    return None


class _Section(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Common settings of every config table: kebab-case keys, unknown keys are errors."""


class TLSConfig(_Section, frozen=True):
    """TLS towards Redis or Sentinel. A ``rediss://`` URL turns TLS on with these files."""

    ca_file: str | None = None
    """PEM file of the CA(s) that signed the server certificate; the system store when not given."""
    cert_file: str | None = None
    """PEM client certificate for mutual TLS; needs ``key-file`` too."""
    key_file: str | None = None
    """PEM private key of ``cert-file``, not encrypted (edged has no passphrase to give); needs
    ``cert-file`` too."""
    verify: bool = True
    """Verify the server certificate and host name. Turn off only in a lab."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key-file" if self.key_file is None else "cert-file"
            raise FieldError(missing, "cert-file and key-file go together")


class SentinelConfig(_Section, frozen=True):
    """Find the primary through Redis Sentinel."""

    hosts: Annotated[list[HostPort], Meta(min_length=1)]
    """The sentinels, as ``"host:port"`` (IPv6 in brackets); any one that answers is enough."""
    service: NonEmpty
    """The monitored primary's name in Sentinel (its ``sentinel monitor`` name, e.g. ``mymaster``)."""
    username: NonEmpty | None = None
    """ACL user on the sentinels themselves; the primary's user is ``[redis] username``."""
    password_file: str | None = None
    """A file holding only the sentinels' password; when not given,
    ``$CREDENTIALS_DIRECTORY/sentinel`` if that exists (``LoadCredential=sentinel:...``), else
    none."""
    tls: TLSConfig | None = None
    """TLS towards the sentinels; the primary's TLS is ``[redis.tls]``."""

    def __post_init__(self) -> None:
        for i, host in enumerate(self.hosts):
            try:
                _split_host_port(host)
            except ValueError as exc:
                raise FieldError(f"hosts[{i}]", str(exc)) from None


class ClusterConfig(_Section, frozen=True):
    """Redis Cluster (or Valkey Cluster): the client finds every primary from the seed nodes and
    follows MOVED/ASK redirects and failovers. User, password and TLS are ``[redis]``'s own."""

    nodes: Annotated[list[HostPort], Meta(min_length=1)]
    """Seed nodes, as ``"host:port"`` (IPv6 in brackets); any one that answers is enough to
    learn the whole cluster, but list several: a seed may be the node that is down."""

    def __post_init__(self) -> None:
        for i, node in enumerate(self.nodes):
            try:
                _split_host_port(node)
            except ValueError as exc:
                raise FieldError(f"nodes[{i}]", str(exc)) from None


class RedisConfig(_Section, frozen=True):
    """Where Redis is and how to log in: ``url``, ``[redis.sentinel]`` or ``[redis.cluster]``,
    at most one of them."""

    url: RedisURL | None = None
    """``redis://``, ``rediss://`` (TLS) or ``unix://``; ``redis://127.0.0.1:6379/0`` when neither
    this nor ``[redis.sentinel]`` is given. A port is 1 to 65535, the path a database number; the
    only query option is ``?db=N``. Prefer ``password-file`` to a password in the URL."""
    username: NonEmpty | None = None
    """ACL user; the default user when not given."""
    password_file: str | None = None
    """A file holding only the password; when not given, ``$CREDENTIALS_DIRECTORY/redis`` if that
    exists (systemd's ``LoadCredential=redis:...``)."""
    tls: TLSConfig | None = None
    """TLS options; the table alone turns TLS on, also for a ``redis://`` URL (not for
    ``unix://``)."""
    sentinel: SentinelConfig | None = None
    """Find the primary through Sentinel and follow its failovers instead of a fixed ``url``."""
    cluster: ClusterConfig | None = None
    """Talk to a Redis Cluster instead of one server; edged then keeps every set of keys that one
    command or script touches in one hash slot (see ``docs/sharding.md``)."""
    db: DbNumber = 0
    """Database number; a number in the URL path wins. The server must have that many
    (``databases``, 16 by default)."""
    connect_timeout: ConnectTimeout = Duration(5)
    """How long opening one connection may take before it counts as failed and is retried; under
    100ms even a healthy server on another host would count as down."""

    def __post_init__(self) -> None:
        _check_durations(self)
        given = [name for name, value in (("url", self.url), ("[redis.sentinel]", self.sentinel),
                                          ("[redis.cluster]", self.cluster)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of url, [redis.sentinel] and [redis.cluster], "
                             f"not {' and '.join(given)}")
        if self.cluster is not None and self.db != 0:
            raise FieldError("db", "a Redis Cluster has only database 0")
        if self.url is None:
            return
        try:
            check_redis_url(self.url)
        except ValueError as exc:
            raise FieldError("url", str(exc)) from None
        if self.tls is not None and self.url.startswith("unix:"):
            raise FieldError("tls", "TLS is not possible over a unix:// socket")


class DaemonConfig(_Section, frozen=True):
    """The daemon process itself."""

    consumer: NonEmpty = "{hostname}"
    """Consumer name, stable per host so that a restart recovers its own pending entries.
    ``{hostname}`` is the only placeholder; the name is printable ASCII without spaces."""
    listen: Listen = "127.0.0.1:9478"
    """Address of /metrics, /healthz and /readyz; empty string turns the HTTP server off."""
    shutdown_grace: ShutdownGrace = Duration(30)
    """How long running handlers get to finish after SIGTERM; those still running then are
    cancelled and their entries stay in the group for a peer, or the next start, to take over.
    ``0s`` cancels them at once; systemd's ``TimeoutStopSec`` must exceed it."""
    heartbeat_interval: HeartbeatInterval = Duration(2)
    """How often the daemon refreshes its registry record, which expires 3 beats after the last
    refresh; while it lives, no other daemon can start with the same consumer name. At least
    100ms: shorter only spins, writing to Redis."""
    key_prefix: NonEmpty = "edged:"
    """Every key of edged's own (the daemons' heartbeat records, the last-seen hash) lives under it;
    daemons and CLI commands that should see each other must share it. No ``*?[]\\`` (it is
    part of SCAN patterns) nor control characters."""
    consumer_expiry: ConsumerExpiry = Duration(3600)
    """A consumer with no heartbeat this long and nothing pending is removed from its groups
    (removing one that owns nothing loses nothing: a daemon that comes back recreates it)."""
    read_block: ReadBlock = Duration(1)
    """How long one XREADGROUP waits for new entries; short so that stopping is quick, and at
    least 1ms: XREADGROUP BLOCK 0 would wait forever."""
    handler_path: list[str] = []
    """Directories to import Python handlers from, searched before the daemon's own
    environment (like ``PYTHONPATH``): ``["/opt/edged-handlers"]`` makes ``"myhandlers:apply"``
    the function ``apply`` of ``/opt/edged-handlers/myhandlers.py``. Each must exist."""

    def __post_init__(self) -> None:
        _check_durations(self)
        if self.listen:
            try:
                _split_host_port(self.listen)
            except ValueError as exc:
                raise FieldError("listen", str(exc)) from None
        _check_consumer_template(self.consumer)
        _check_key_prefix(self.key_prefix)
        for i, directory in enumerate(self.handler_path):
            if not os.path.isdir(directory):
                raise FieldError(f"handler-path[{i}]", f"{directory!r} is not a directory")

    def consumer_name(self) -> str:
        return self.consumer.replace("{hostname}", socket.gethostname())


def _check_consumer_template(template: str) -> None:
    rest = template.replace("{hostname}", "")
    if "{" in rest or "}" in rest:
        raise FieldError("consumer", f"{template!r}: the only placeholder is {{hostname}}")
    problem = check_consumer_name(rest)
    if problem:
        raise FieldError("consumer", problem)


def _check_key_prefix(prefix: str) -> None:
    for ch in prefix:
        if ch in "*?[]\\" or not ch.isprintable():
            raise FieldError("key-prefix", f"{prefix!r} has {ch!r}: no *?[]\\ nor control characters "
                             "(the prefix is part of SCAN patterns)")


class ExecHandler(_Section, frozen=True):
    """Run a program for each entry (``handler = { exec = [...] }``): payload on stdin, metadata in
    ``EDGED_*`` variables."""

    exec: Annotated[list[str], Meta(min_length=1)]
    """Program and arguments, run without a shell; exit 0 acks, 75 retries, anything else fails.
    ``config validate`` and ``start`` check that the program exists and is executable."""
    timeout: ExecTimeout = Duration(60)
    """The whole process group is killed after this; the entry is then retried."""

    def __post_init__(self) -> None:
        _check_durations(self)
        for i, arg in enumerate(self.exec):
            if "\0" in arg or (i == 0 and not arg):
                raise FieldError(f"exec[{i}]", "an argument cannot hold a NUL character, "
                                 "nor the program name be empty")


class StreamConfig(_Section, frozen=True):
    """One stream read through one consumer group."""

    stream: NonEmpty
    """The stream key to read."""
    handler: HandlerRef | ExecHandler
    """``"module:function"`` or ``{ exec = ["/path/prog", "arg"] }``."""
    group: NonEmpty = "edged"
    """Consumer group; created (with ``start-id``) when missing. Daemons sharing it share the work."""
    concurrency: Concurrency = 16
    """Handlers running at once for this stream, which is also the most entries this consumer
    holds unacked."""
    claim_idle: ClaimIdle = Duration(60)
    """How long an entry must sit idle in a peer's pending list before this daemon takes it over
    with XAUTOCLAIM; leases, renewed every quarter of it, keep long-running handlers' entries from
    being taken. At most 12h: entries handed back at shutdown must look idle longer than any
    claim-idle."""
    claim_interval: ClaimInterval = Duration(5)
    """How often a reclaim pass runs (XAUTOCLAIM of entries idle past ``claim-idle``); it may be
    longer or shorter than ``claim-idle``. At least 100ms: shorter only spins, asking Redis."""
    max_deliveries: PositiveInt = 5
    """Deliveries, as counted by Redis, after which a failing entry goes to the dead-letter stream."""
    dead_letter: str | None = None
    """Dead-letter stream; when not given ``"<stream>:dead"`` on one server, ``"{<stream>}:dead"``
    on a cluster (the stream's hash slot), ``"{<shard>}:dead"`` per shard. Never a stream edged
    reads: a rejected entry would come back, again and again. On a cluster it must share the
    stream's slot, and a sharded stream cannot set one."""
    codec: Codec = "json"
    """How the ``payload`` field is decoded (``raw``: bytes as they are); a payload that does not
    decode goes straight to the dead-letter stream."""
    start_id: str = "$"
    """Where a newly created group starts: ``$`` (new entries only), ``0`` (the whole stream), or
    an entry id ``<ms>-<seq>`` (the entries after it)."""
    retry_backoff: RetryBackoff = Duration(1)
    """Wait before the second delivery of a failed entry; doubles with each delivery. At least
    10ms, so that failed entries do not hot-loop."""
    retry_backoff_max: RetryBackoffMax = Duration(300)
    """The longest wait between deliveries of a failed entry, however often it failed; not below
    ``retry-backoff``."""
    cancel_on_lost_lease: bool = True
    """Cancel a handler whose entry was claimed by a peer (its result could not be acked)."""
    shards: Annotated[int, Meta(ge=1, le=MAX_SHARDS)] = 1
    """Spread this logical stream over this many physical streams (named ``<stream>:<i>:<k>``,
    placed in distinct ranges of hash slots so that a cluster's primaries share them), one group
    on each; ``concurrency`` is shared by all of them and is at least ``shards``. 1: the stream
    itself. Producers pick the
    shard (``edged publish --key``); see ``docs/sharding.md``. A sharded stream's name has no
    ``{`` or ``}``."""

    def __post_init__(self) -> None:
        _check_durations(self)
        if isinstance(self.handler, str):
            _check_handler_ref(self.handler)
        if self.concurrency < self.shards:
            raise FieldError("concurrency", f"{self.concurrency} is below shards ({self.shards}): "
                             "each shard's reader holds one slot while it waits for entries")
        if self.shards > 1 and ("{" in self.stream or "}" in self.stream):
            raise FieldError("shards", f"stream {self.stream!r} has a brace: a hash tag in it would "
                             "put every shard in one slot; sharded streams are named without { }")
        check_start_id(self.start_id)
        if self.retry_backoff.seconds > self.retry_backoff_max.seconds:
            raise FieldError("retry-backoff-max", f'"{self.retry_backoff_max}" is below retry-backoff '
                             f'"{self.retry_backoff}"')
        if self.dead_letter_stream == self.stream:
            raise FieldError("dead-letter", f"{self.stream!r} is the stream itself: a rejected entry "
                             "would be delivered again, forever")

    retention: Retention | None = None
    """Trim entries older than this (by the time in their id) once every consumer group of the
    stream is done with them: an entry a group has not read yet, or still has pending, is never
    trimmed (see "Retention" in README.md). Not set: never trimmed by age."""
    max_len: PositiveInt | None = None
    """Trim all but the newest this many entries, under the same rule as ``retention`` (with
    both, whichever trims more). Not set: never trimmed by length."""
    dead_letter_retention: Retention | None = None
    """Trim dead-letter entries older than this. A dead-letter stream has no consumer group of
    edged's: plain retention (a group someone created on it is still respected)."""
    dead_letter_max_len: PositiveInt | None = None
    """Keep at most this many entries in the dead-letter stream (the newest)."""
    trim_interval: TrimInterval = Duration(30)
    """How often the daemon holding the stream's trim lease trims it (when ``retention`` or
    ``max-len``, or their dead-letter twins, are set); one daemon of the fleet trims each stream."""

    @property
    def trims(self) -> bool:
        """Retention or a length limit is set for the stream or its dead-letter stream."""
        return (self.retention is not None or self.max_len is not None
                or self.dead_letter_retention is not None or self.dead_letter_max_len is not None)

    @property
    def dead_letter_stream(self) -> str:
        return self.dead_letter or f"{self.stream}:dead"


def _check_handler_ref(ref: str) -> None:
    module, sep, attr = ref.partition(":")
    names = [*module.split("."), *attr.split(".")]
    if not sep or not all(name.isidentifier() for name in names):
        raise FieldError("handler", f"handler {ref!r} must look like 'module:function' "
                         "(dotted Python names)")


class OutboxConfig(_Section, frozen=True):
    """Local publishes (HTTP ``POST /v1/publish/<stream>``, the unix socket, ``edged publish
    --via-daemon``) are written to this durable outbox first, answered, then forwarded to Redis
    in the order accepted; they wait here while Redis is away (see "Outbox" in README.md)."""

    path: str | None = None
    """The outbox file (SQLite; its ``-wal`` and ``-shm`` files sit beside it). Not set:
    ``outbox`` in the state directory (``$XDG_STATE_HOME/edged``, ``/var/lib/edged`` under the
    systemd unit)."""
    socket: str | None = None
    """A unix socket to accept publishes on (HTTP, the same paths as ``[daemon] listen``); its
    file permissions are the access control. Not set: no socket."""
    socket_mode: str = "0660"
    """The socket's permission bits, in octal: who may publish. The socket belongs to the
    daemon's user and group."""
    http: bool = True
    """Accept publishes on ``[daemon] listen`` too. That address is open to every local user:
    ``false`` leaves only the socket, whose permissions say who may publish."""
    max_entries: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 1_000_000
    """At most this many entries wait in the outbox; a publish that would pass it is refused
    whole (HTTP 507, exit 75 for ``edged publish``), never dropped."""
    max_bytes: Size = ByteSize(2**30)
    """At most this many bytes of entries (fields and stream names) wait in the outbox; past
    it, publishes are refused like past ``max-entries``."""
    batch: Annotated[int, Meta(ge=1, le=1000)] = 500
    """Entries forwarded per round trip (one pipeline per stream). A crash between the XADD and
    the outbox removal re-sends at most one batch: the duplicates README describes."""
    wait_replicas: Annotated[int, Meta(ge=0, le=100)] = 0
    """Forwarded entries leave the outbox only once this many replicas have them (WAIT); 0:
    once the primary has them."""
    wait_timeout: WaitTimeout = Duration(1)
    """How long each forwarded batch waits for ``wait-replicas``; a batch not replicated in
    time stays in the outbox and is sent again (the copies carry the same ``edged-msgid``)."""
    shards: dict[str, Annotated[int, Meta(ge=1, le=MAX_SHARDS)]] = {}
    """The shard count of each sharded stream publishes may go to, as the consumers have it
    (``{ telemetry = 6 }``), so that ``key=`` picks the same shard. The ``shards`` of this
    config's own ``[[streams]]`` count too; a stream in neither takes entries unsharded."""

    def __post_init__(self) -> None:
        _check_durations(self)
        if not re.fullmatch(r"0?[0-7]{3}", self.socket_mode):
            raise FieldError("socket-mode", f"{self.socket_mode!r} is not octal permission "
                                            'bits like "0660"')
        if self.socket is not None and not self.socket.startswith("/"):
            raise FieldError("socket", f"{self.socket!r}: give an absolute path")
        for name in self.shards:
            if not name:
                raise FieldError("shards", "a stream name cannot be empty")

    def mode_bits(self) -> int:
        return int(self.socket_mode, 8)


class Config(_Section, frozen=True):
    """The whole file."""

    redis: RedisConfig = RedisConfig()
    """Where Redis is and how to log in."""
    daemon: DaemonConfig = DaemonConfig()
    """The daemon process itself."""
    streams: list[StreamConfig] = []
    """The streams to read, one ``[[streams]]`` table each; a stream and group pair at most once."""
    outbox: OutboxConfig | None = None
    """The durable outbox for local publishes; not set: the daemon accepts none."""

    def __post_init__(self) -> None:
        _check_pairs_unique(self.streams)
        cluster = self.redis.cluster is not None
        _check_dead_letters(self.streams, cluster)
        if cluster:
            _check_cluster_prefix(self.daemon.key_prefix)
        if self.outbox is not None:
            _check_outbox_reach(self.outbox, self.daemon.listen)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data, safe to print: secrets are never in it, URLs lose passwords."""
        data: dict[str, Any] = msgspec.to_builtins(self, enc_hook=_enc_hook)
        url = data["redis"].get("url")
        if url:
            data["redis"]["url"] = redact_url(url)
        return data


def _check_outbox_reach(outbox: OutboxConfig, listen: str) -> None:
    """Something can publish, and over HTTP only from this host: the publish endpoint has no
    authentication, so a listen address other networks reach would open it to them."""
    if outbox.socket is None and not (outbox.http and listen):
        raise FieldError("outbox.socket", "nothing could publish: set a socket, or keep "
                                          "[daemon] listen and outbox http = true")
    if outbox.http and listen and not _is_loopback(split_host_port(listen)[0]):
        raise FieldError("outbox.http", f"[daemon] listen {listen} is reachable from other "
                                        "hosts, and publishing has no authentication: set "
                                        "http = false (publish on the socket) or listen on "
                                        "loopback")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_pairs_unique(streams: list[StreamConfig]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, s in enumerate(streams):
        first = seen.setdefault((s.stream, s.group), i)
        if first != i:
            raise FieldError(f"streams[{i}]", f"stream {s.stream!r} group {s.group!r} is listed "
                             f"twice (also streams[{first}])")


def _check_dead_letters(streams: list[StreamConfig], cluster: bool) -> None:
    """Every dead-letter stream can be named (in the stream's slot, on a cluster), and none is a
    stream edged reads: a rejected entry would loop through it."""
    dead: list[list[str]] = []
    for i, s in enumerate(streams):
        try:
            dead.append(dead_letter_names(s.stream, s.shards, s.dead_letter, cluster))
        except ValueError as exc:
            raise FieldError(f"streams[{i}].dead-letter", str(exc)) from None
    read: dict[str, int] = {}
    for i, s in reversed(list(enumerate(streams))):
        for name in shard_names(s.stream, s.shards):
            read[name] = i
    for i, s in enumerate(streams):
        for name in dead[i]:
            j = read.get(name)
            if j is not None:
                given = "" if s.dead_letter else " (the default)"
                raise FieldError(f"streams[{i}].dead-letter", f"{name!r}{given} is read as "
                                 f"streams[{j}].stream: its entries would be handled, and "
                                 "dead-lettered, again and again")


def _check_cluster_prefix(prefix: str) -> None:
    """On a cluster the heartbeat script touches two keys of edged's own: a prefix with braces
    must be a hash tag itself, or they would land in different slots."""
    if ("{" in prefix or "}" in prefix) and hash_tag(prefix) is None:
        raise FieldError("daemon.key-prefix", f"{prefix!r} has braces but no hash tag: on a "
                         "cluster edged's keys must share a slot; write it without braces "
                         "(edged adds them) or with a non-empty {tag}")


def split_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9478"`` → ``("127.0.0.1", 9478)``; IPv6 in brackets."""
    return _split_host_port(text)


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is ByteSize:
        if isinstance(obj, str | int) and not isinstance(obj, bool):
            return ByteSize.parse(obj)
        raise TypeError('expected a size like "1GiB"')
    if type_ is Duration:
        if isinstance(obj, str):
            return Duration.parse(obj)
        raise TypeError('expected a duration string like "30s"')
    raise NotImplementedError


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Duration | ByteSize):
        return str(obj)
    raise NotImplementedError


def redact_url(url: str) -> str:
    """Drop the password from a Redis URL so it can be logged; works on any string, even one
    urllib cannot parse (a bad port), so that an error about a URL never shows its password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hostport}{rest[end:]}"


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Turn decoded TOML into a Config; errors name ``source`` and the field path."""
    try:
        return msgspec.convert(data, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        reason, path = _reason_and_path(exc)
        raise config_error(source, path, reason) from None


def _reason_and_path(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's message and path; a FieldError's field is appended to the path of its table."""
    reason, sep, path = str(exc).rpartition(" - at `")
    if not sep:  # msgspec leaves the path out for the top level
        reason, path = str(exc), "$`"
    path = path.removesuffix("`")
    cause = exc.__cause__
    if isinstance(cause, FieldError):
        reason = cause.reason
        path += cause.field if cause.field.startswith("[") else f".{cause.field}"
    return reason, path


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a config file. Raises ConfigError (exit 78) naming the file and field."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, str(p))


def demo_config() -> Config:
    """What ``edged start --embedded`` runs without ``-c``: the demo stream and the log handler."""
    return Config(
        daemon=DaemonConfig(listen="127.0.0.1:9478"),
        streams=[StreamConfig(stream="edged:demo", handler="edged.handlers:log", start_id="0")],
    )
