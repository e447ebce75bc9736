"""Credentials and TLS options for the Redis and Sentinel connections.

Secrets come only from files (or systemd's credential directory), never from the config itself.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from redis.asyncio.connection import AbstractConnection

from edged.config import TLSConfig
from edged.errors import ConfigError

# Under systemd, LoadCredential=redis:/path puts the secret in $CREDENTIALS_DIRECTORY/redis.
CREDENTIAL_NAME = "redis"

# No CLIENT SETINFO on connect: Redis 7.0 lacks it, and a least-privilege ACL user would fill
# ACL LOG with its denials on 7.2+. redis-py 8 spells this driver_info=None; older, lib_name.
NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def read_secret(path: str | None) -> str | None:
    """The password from ``path`` (first line), else from systemd's credential directory."""
    if path is None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds or not (Path(creds) / CREDENTIAL_NAME).is_file():
            return None
        path = str(Path(creds) / CREDENTIAL_NAME)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"password-file {path}: cannot read: {exc.strerror}") from None
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise ConfigError(f"password-file {path}: is empty")
    return secret


def tls_kwargs(tls: TLSConfig | None) -> dict[str, Any]:
    """redis-py connection options for ``tls`` (empty when TLS is not configured)."""
    if tls is None:
        return {}
    kwargs: dict[str, Any] = {"ssl_cert_reqs": "required" if tls.verify else "none"}
    kwargs["ssl_check_hostname"] = tls.verify
    if tls.ca_file:
        kwargs["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file:
        kwargs["ssl_certfile"] = tls.cert_file
        kwargs["ssl_keyfile"] = tls.key_file
    return kwargs
