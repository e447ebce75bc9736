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
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    """Verify the server certificate and host name. Turn off only in a lab."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert-file and key-file go together")


class SentinelConfig(_Section, frozen=True):
    """Find the primary through Redis Sentinel."""

    hosts: Annotated[list[str], Meta(min_length=1)]
    service: str
    username: str | None = None
    password_file: str | None = None
    tls: TLSConfig | None = None

    def __post_init__(self) -> None:
        for host in self.hosts:
            _split_host_port(host)


class RedisConfig(_Section, frozen=True):
    """Where Redis is and how to log in. ``url`` or ``[redis.sentinel]``, not both."""

    url: str | None = None
    username: str | None = None
    password_file: str | None = None
    """A file holding only the password; under systemd, a ``LoadCredential=`` path."""
    tls: TLSConfig | None = None
    sentinel: SentinelConfig | None = None
    db: Annotated[int, Meta(ge=0)] = 0
    connect_timeout: Duration = Duration(5)

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
    listen: str = "127.0.0.1:9478"
    """Address of /metrics, /healthz and /readyz; empty string turns the HTTP server off."""
    shutdown_grace: Duration = Duration(30)
    heartbeat_interval: Duration = Duration(2)
    key_prefix: Annotated[str, Meta(min_length=1)] = "edged:"
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
    """Run a program for each entry: payload on stdin, metadata in EDGED_* variables."""

    exec: Annotated[list[str], Meta(min_length=1)]
    timeout: Duration = Duration(60)
    """The whole process group is killed after this; the entry is then retried."""


class StreamConfig(_Section, frozen=True):
    """One stream read through one consumer group."""

    stream: Annotated[str, Meta(min_length=1)]
    handler: str | ExecHandler
    """``"module:function"`` or ``{ exec = ["/path/prog", "arg"] }``."""
    group: Annotated[str, Meta(min_length=1)] = "edged"
    concurrency: Concurrency = 16
    claim_idle: Duration = Duration(60)
    claim_interval: Duration = Duration(5)
    max_deliveries: PositiveInt = 5
    dead_letter: str | None = None
    """Dead-letter stream; ``"<stream>:dead"`` when not given."""
    codec: Codec = "json"
    start_id: str = "$"
    """Where a newly created group starts: ``$`` (new entries only) or ``0`` (the whole stream)."""
    retry_backoff: Duration = Duration(1)
    """Wait before the second delivery of a failed entry; doubles with each delivery."""
    retry_backoff_max: Duration = Duration(300)
    cancel_on_lost_lease: bool = True
    """Cancel a handler whose entry was claimed by a peer (its result could not be acked)."""

    def __post_init__(self) -> None:
        if isinstance(self.handler, str) and ":" not in self.handler:
            raise ValueError(f"handler {self.handler!r} must look like 'module:function'")
        if self.claim_interval.seconds <= 0 or self.claim_idle.seconds < 0.1:
            raise ValueError("claim-idle must be at least 100ms and claim-interval above zero")
        if self.retry_backoff.seconds < 0.01:
            raise ValueError("retry-backoff must be at least 10ms: failed entries must not hot-loop")

    @property
    def dead_letter_stream(self) -> str:
        return self.dead_letter or f"{self.stream}:dead"


class Config(_Section, frozen=True):
    """The whole file."""

    redis: RedisConfig = RedisConfig()
    daemon: DaemonConfig = DaemonConfig()
    streams: list[StreamConfig] = []

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
