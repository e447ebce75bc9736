"""Credentials and TLS options for the Redis and Sentinel connections.

Secrets come only from files (or systemd's credential directory), never from the config itself.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import ssl
import stat
from pathlib import Path
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.credentials import CredentialProvider

from edged.config import RedisConfig, TLSConfig, config_error
from edged.errors import ConfigError

# Under systemd, LoadCredential=redis:/path puts the secret in $CREDENTIALS_DIRECTORY/redis;
# the sentinels' own password, if they have one, comes as LoadCredential=sentinel:/path.
CREDENTIAL_NAME = "redis"
SENTINEL_CREDENTIAL_NAME = "sentinel"

# No CLIENT SETINFO on connect: Redis 7.0 lacks it, and a least-privilege ACL user would fill
# ACL LOG with its denials on 7.2+. redis-py 8 spells this driver_info=None; older, lib_name.
NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def _check_readable(path: str, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path!r}: {exc.strerror or exc}") from None


def read_secret(path: str | None, credential: str = CREDENTIAL_NAME) -> str | None:
    """The password from ``path`` (first line), else from systemd's credential ``credential``."""
    path = secret_path(path, credential)
    if path is None:
        return None
    try:
        return _read_secret_file(path)
    except ValueError as exc:
        raise ConfigError(f"password-file {exc}") from None


def secret_path(path: str | None, credential: str = CREDENTIAL_NAME) -> str | None:
    """``path``, else ``$CREDENTIALS_DIRECTORY/<credential>`` if that exists, else None."""
    if path is not None:
        return path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds or not (Path(creds) / credential).is_file():
        return None
    return str(Path(creds) / credential)


def _read_secret_file(path: str) -> str:
    """The first line of ``path``; ValueError naming the file, never any of its contents."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block start-up for good
            raise ValueError(f"{path}: is not a regular file")
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # its message would quote a byte of the secret
        raise ValueError(f"{path}: is not UTF-8 text") from None
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise ValueError(f"{path}: is empty (the password is its first line)")
    return secret


class FileCredentials(CredentialProvider):
    """The username and the password file, read again for every new connection: a password
    rotated, or a wrong one fixed, is used from the next connection on without a restart.

    A file that became unreadable since start-up (checked then: ``check_credentials``) keeps
    the last password read; the server's answer then says whether it still works.
    """

    def __init__(self, username: str | None, path: str) -> None:
        self.username = username
        self.path = path
        self._last = _read_secret_file(path)

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        with contextlib.suppress(ValueError):  # unreadable now: keep the last one read
            self._last = _read_secret_file(self.path)
        if self.username is None:
            return (self._last,)
        return (self.username, self._last)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def credential_kwargs(username: str | None, password_file: str | None,
                      credential: str = CREDENTIAL_NAME) -> dict[str, Any]:
    """redis-py options for the user and its password file (or systemd's credential)."""
    path = secret_path(password_file, credential)
    if path is not None:
        try:
            return {"credential_provider": FileCredentials(username, path)}
        except ValueError as exc:  # named file, never its contents
            raise ConfigError(f"password file {exc}") from None
    return {} if username is None else {"username": username}


def check_credentials(cfg: RedisConfig, source: str) -> None:
    """Read every password file and load every TLS file now, as the first connection would, so
    that a bad one is a ConfigError naming ``source`` and the field, before any connection. The
    messages name files, never what is in them."""
    _check_secret(secret_path(cfg.password_file), source, "$.redis.password-file")
    check_tls_files(cfg.tls, source, "$.redis.tls")
    if cfg.sentinel is not None:
        _check_secret(secret_path(cfg.sentinel.password_file, SENTINEL_CREDENTIAL_NAME),
                      source, "$.redis.sentinel.password-file")
        check_tls_files(cfg.sentinel.tls, source, "$.redis.sentinel.tls")


def _check_secret(path: str | None, source: str, where: str) -> None:
    if path is None:
        return
    try:
        _read_secret_file(path)
    except ValueError as exc:
        raise config_error(source, where, str(exc)) from None


def check_tls_files(tls: TLSConfig | None, source: str, where: str) -> None:
    """The CA, certificate and key files load into a TLS context (ConfigError if not)."""
    if tls is None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise config_error(source, f"{where}.ca-file",
                               f"{tls.ca_file}: not a PEM CA certificate file ({_why(exc)})") from None
    if tls.cert_file and tls.key_file:
        try:  # an encrypted key gets an empty passphrase and fails here, not at a prompt
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: "")
        except (OSError, ssl.SSLError) as exc:
            raise config_error(
                source, f"{where}.cert-file",
                f"{tls.cert_file} with key-file {tls.key_file}: not a PEM certificate and its "
                f"unencrypted private key ({_why(exc)})",
            ) from None


def _why(exc: OSError | ssl.SSLError) -> str:
    """An OSError's or SSLError's reason: a file's name and OpenSSL's words, never its contents."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.library or "unreadable")
    return str(exc.strerror or type(exc).__name__)


def tls_kwargs(tls: TLSConfig | None, where: str = "[redis.tls]") -> dict[str, Any]:
    """redis-py connection options for ``tls`` (empty when TLS is not configured).

    The files are checked here, before any connection: redis-py would report a missing one as
    an OSError on connect, which reads as "Redis unavailable" and is retried for ever. A file
    that cannot be read is a config error (78) naming ``where`` (the table), the field and
    the path.
    """
    if tls is None:
        return {}
    for field, path in (("ca-file", tls.ca_file), ("cert-file", tls.cert_file),
                        ("key-file", tls.key_file)):
        if path is not None:
            _check_readable(path, f"{where} {field}")
    kwargs: dict[str, Any] = {"ssl_cert_reqs": "required" if tls.verify else "none"}
    kwargs["ssl_check_hostname"] = tls.verify
    if tls.ca_file:
        kwargs["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file:
        kwargs["ssl_certfile"] = tls.cert_file
        kwargs["ssl_keyfile"] = tls.key_file
    return kwargs
