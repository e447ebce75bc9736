"""The configuration file: TOML decoded into frozen msgspec structs.

Every error names where it is: the file and the path of the field (``$.streams[0].claim-idle``).
Secrets are never stored here: only the paths of the files that hold them.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from edged.durations import Duration
from edged.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/edged/edged.toml")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

PositiveInt = Annotated[int, Meta(ge=1)]
Concurrency = Annotated[int, Meta(ge=1, le=10_000)]
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


def _split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


class _Section(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Common settings of every config table: kebab-case keys, unknown keys are errors."""


class TLSConfig(_Section, frozen=True):
    """TLS towards Redis or Sentinel. A ``rediss://`` URL turns TLS on with these files."""

    ca_file: str | None = None
    """PEM file of the CA(s) that signed the server certificate; the system store when not given."""
    cert_file: str | None = None
    """PEM client certificate for mutual TLS; needs ``key-file`` too."""
    key_file: str | None = None
    """PEM private key of ``cert-file``; needs ``cert-file`` too."""
    verify: bool = True
    """Verify the server certificate and host name. Turn off only in a lab."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert-file and key-file go together")


class SentinelConfig(_Section, frozen=True):
    """Find the primary through Redis Sentinel."""

    hosts: Annotated[list[HostPort], Meta(min_length=1)]
    """The sentinels, as ``"host:port"`` (IPv6 in brackets); any one that answers is enough."""
    service: str
    """The monitored primary's name in Sentinel (its ``sentinel monitor`` name, e.g. ``mymaster``)."""
    username: str | None = None
    """ACL user on the sentinels themselves; the primary's user is ``[redis] username``."""
    password_file: str | None = None
    """A file holding only the sentinels' password; none when not given."""
    tls: TLSConfig | None = None
    """TLS towards the sentinels; the primary's TLS is ``[redis.tls]``."""

    def __post_init__(self) -> None:
        for host in self.hosts:
            _split_host_port(host)


class RedisConfig(_Section, frozen=True):
    """Where Redis is and how to log in. ``url`` or ``[redis.sentinel]``, not both."""

    url: RedisURL | None = None
    """``redis://``, ``rediss://`` (TLS) or ``unix://``; ``redis://127.0.0.1:6379/0`` when neither
    this nor ``[redis.sentinel]`` is given. Prefer ``password-file`` to a password in the URL."""
    username: str | None = None
    """ACL user; the default user when not given."""
    password_file: str | None = None
    """A file holding only the password; when not given, ``$CREDENTIALS_DIRECTORY/redis`` if that
    exists (systemd's ``LoadCredential=redis:...``)."""
    tls: TLSConfig | None = None
    """TLS options; the table alone turns TLS on, also for a ``redis://`` URL."""
    sentinel: SentinelConfig | None = None
    """Find the primary through Sentinel and follow its failovers instead of a fixed ``url``."""
    db: Annotated[int, Meta(ge=0)] = 0
    """Database number; a number in the URL path wins."""
    connect_timeout: Duration = Duration(5)
    """How long opening one connection may take before it counts as failed and is retried."""

    def __post_init__(self) -> None:
        if self.url is not None and self.sentinel is not None:
            raise ValueError("give either url or [redis.sentinel], not both")
        if self.url is not None:
            scheme = urlsplit(self.url).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError(
                    f"url scheme {scheme!r} is not one of redis://, rediss://, unix://"
                )


class DaemonConfig(_Section, frozen=True):
    """The daemon process itself."""

    consumer: Annotated[str, Meta(min_length=1)] = "{hostname}"
    """Consumer name, stable per host so that a restart recovers its own pending entries."""
    listen: Listen = "127.0.0.1:9478"
    """Address of /metrics, /healthz and /readyz; empty string turns the HTTP server off."""
    shutdown_grace: Duration = Duration(30)
    """How long running handlers get to finish after SIGTERM; those still running then are
    cancelled and their entries stay in the group for a peer, or the next start, to take over."""
    heartbeat_interval: Duration = Duration(2)
    """How often the daemon refreshes its registry record, which expires 3 beats after the last
    refresh; while it lives, no other daemon can start with the same consumer name."""
    key_prefix: Annotated[str, Meta(min_length=1)] = "edged:"
    """Every key of edged's own (the daemons' heartbeat records, the last-seen hash) lives under it;
    daemons and CLI commands that should see each other must share it."""
    consumer_expiry: Duration = Duration(3600)
    """A consumer with no heartbeat this long and nothing pending is removed from its groups."""
    read_block: Duration = Duration(1)
    """How long one XREADGROUP waits for new entries; short so that stopping is quick."""

    def __post_init__(self) -> None:
        if self.listen:
            _split_host_port(self.listen)
        if not 0.001 <= self.read_block.seconds <= 1.0:
            raise ValueError("read-block must be between 1ms and 1s")

    def consumer_name(self) -> str:
        return self.consumer.replace("{hostname}", socket.gethostname())


class ExecHandler(_Section, frozen=True):
    """Run a program for each entry (``handler = { exec = [...] }``): payload on stdin, metadata in
    ``EDGED_*`` variables."""

    exec: Annotated[list[str], Meta(min_length=1)]
    """Program and arguments, run without a shell; exit 0 acks, 75 retries, anything else fails."""
    timeout: Duration = Duration(60)
    """The whole process group is killed after this; the entry is then retried."""


class StreamConfig(_Section, frozen=True):
    """One stream read through one consumer group."""

    stream: Annotated[str, Meta(min_length=1)]
    """The stream key to read."""
    handler: HandlerRef | ExecHandler
    """``"module:function"`` or ``{ exec = ["/path/prog", "arg"] }``."""
    group: Annotated[str, Meta(min_length=1)] = "edged"
    """Consumer group; created (with ``start-id``) when missing. Daemons sharing it share the work."""
    concurrency: Concurrency = 16
    """Handlers running at once for this stream, which is also the most entries this consumer
    holds unacked."""
    claim_idle: Duration = Duration(60)
    """How long an entry must sit idle in a peer's pending list before this daemon takes it over
    with XAUTOCLAIM (100ms to 12h); leases keep long-running handlers' entries from being taken."""
    claim_interval: Duration = Duration(5)
    """How often a reclaim pass runs (XAUTOCLAIM of entries idle past ``claim-idle``)."""
    max_deliveries: PositiveInt = 5
    """Deliveries, as counted by Redis, after which a failing entry goes to the dead-letter stream."""
    dead_letter: str | None = None
    """Dead-letter stream; ``"<stream>:dead"`` when not given."""
    codec: Codec = "json"
    """How the ``payload`` field is decoded (``raw``: bytes as they are); a payload that does not
    decode goes straight to the dead-letter stream."""
    start_id: str = "$"
    """Where a newly created group starts: ``$`` (new entries only) or ``0`` (the whole stream)."""
    retry_backoff: Duration = Duration(1)
    """Wait before the second delivery of a failed entry; doubles with each delivery."""
    retry_backoff_max: Duration = Duration(300)
    """The longest wait between deliveries of a failed entry, however often it failed."""
    cancel_on_lost_lease: bool = True
    """Cancel a handler whose entry was claimed by a peer (its result could not be acked)."""

    def __post_init__(self) -> None:
        if isinstance(self.handler, str) and ":" not in self.handler:
            raise ValueError(f"handler {self.handler!r} must look like 'module:function'")
        if self.claim_interval.seconds <= 0 or self.claim_idle.seconds < 0.1:
            raise ValueError("claim-idle must be at least 100ms and claim-interval above zero")
        if self.claim_idle.seconds > MAX_CLAIM_IDLE.seconds:
            raise ValueError(
                f"claim-idle {self.claim_idle} is above the limit of {MAX_CLAIM_IDLE}: entries handed "
                "back at shutdown must look idle longer than any claim-idle"
            )
        if self.retry_backoff.seconds < 0.01:
            raise ValueError("retry-backoff must be at least 10ms: failed entries must not hot-loop")

    @property
    def dead_letter_stream(self) -> str:
        return self.dead_letter or f"{self.stream}:dead"


class Config(_Section, frozen=True):
    """The whole file."""

    redis: RedisConfig = RedisConfig()
    """Where Redis is and how to log in."""
    daemon: DaemonConfig = DaemonConfig()
    """The daemon process itself."""
    streams: list[StreamConfig] = []
    """The streams to read, one ``[[streams]]`` table each; a stream and group pair at most once."""

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        for i, s in enumerate(self.streams):
            key = (s.stream, s.group)
            if key in seen:
                raise ValueError(f"streams[{i}]: stream {s.stream!r} group {s.group!r} is listed twice")
            seen.add(key)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data, safe to print: secrets are never in it, URLs lose passwords."""
        data: dict[str, Any] = msgspec.to_builtins(self, enc_hook=_enc_hook)
        url = data["redis"].get("url")
        if url:
            data["redis"]["url"] = redact_url(url)
        return data


def split_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9478"`` → ``("127.0.0.1", 9478)``; IPv6 in brackets."""
    return _split_host_port(text)


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Duration:
        if isinstance(obj, str):
            return Duration.parse(obj)
        raise TypeError('expected a duration string like "30s"')
    raise NotImplementedError


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Duration):
        return str(obj)
    raise NotImplementedError


def redact_url(url: str) -> str:
    """Drop the password from a Redis URL so it can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return parts._replace(netloc=netloc).geturl()


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Turn decoded TOML into a Config; errors name ``source`` and the field path."""
    try:
        return msgspec.convert(data, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if " - at `$" not in message:  # msgspec leaves the path out for the top level
            message += " - at `$`"
        raise ConfigError(f"{source}: {message}") from None


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
        daemon=DaemonConfig(listen=""),
        streams=[StreamConfig(stream="edged:demo", handler="edged.handlers:log", start_id="0")],
    )
