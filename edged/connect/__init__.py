"""Reaching Redis: one client factory for direct, TLS, ACL and Sentinel connections, and the
errors after which edged reconnects instead of giving up."""

from edged.connect.client import describe_target, make_client
from edged.connect.transient import TRANSIENT_ERRORS, FailoverError

__all__ = ["TRANSIENT_ERRORS", "FailoverError", "describe_target", "make_client"]
