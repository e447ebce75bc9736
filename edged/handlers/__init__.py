"""Turning a configured handler into one awaitable call per event, and the built-in handlers.

A handler's outcome is reported by how it ends: returning means "ack", ``Retry`` means "deliver
again later", ``Reject`` means "dead-letter now", any other exception means "retry until
max-deliveries". Exec handlers map their exit status onto the same outcomes.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from edged.config import ExecHandler, StreamConfig, config_error
from edged.events import Event
from edged.handlers.exec import run_exec
from edged.handlers.threads import ThreadRunner

HandlerCall = Callable[[Event], Awaitable[Any]]


def load_python_handler(spec: str) -> Callable[[Event], Any]:
    """Import ``"module:function"``; errors say what could not be found."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # any import-time failure is a config problem
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except Exception:  # AttributeError, or whatever a module __getattr__ raises
            raise ValueError(f"module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable (it is a {type(target).__name__})")
    return target


def use_handler_path(directories: list[str]) -> None:
    """Put ``[daemon] handler-path`` in front of the import path (once each)."""
    for directory in reversed(directories):
        if directory not in sys.path:
            sys.path.insert(0, directory)


def check_signature(fn: Callable[..., Any], spec: str) -> None:
    """A handler is called with one Event: refuse one that cannot take it."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: it will have to do
        return
    try:
        signature.bind(object())
    except TypeError:
        raise ValueError(f"{spec!r} must take one argument, the Event: it is {fn.__name__}"
                         f"{signature}") from None


def build_handler(cfg: StreamConfig, index: int, source: str = "<config>") -> HandlerCall:
    """The coroutine function that runs one event for this stream's handler config; a handler
    that cannot be loaded raises ConfigError naming ``source`` (the config file) and the field."""
    spec = cfg.handler
    if isinstance(spec, ExecHandler):
        timeout = spec.timeout.seconds
        argv = list(spec.exec)

        async def exec_call(event: Event) -> None:
            await run_exec(argv, event, timeout)

        return exec_call
    try:
        fn = load_python_handler(spec)
        check_signature(fn, spec)
    except ValueError as exc:
        hint = ("; handlers are imported from the daemon's own Python environment and from "
                "[daemon] handler-path" if "cannot import" in str(exc) else "")
        raise config_error(source, f"$.streams[{index}].handler",
                           f"stream {cfg.stream}: {exc}{hint}") from None
    if inspect.iscoroutinefunction(fn):
        return fn
    # Sync handlers run in threads of the stream's own, at most `concurrency` at once.
    return ThreadRunner(fn, cfg.concurrency, f"edged-{cfg.stream}")


_encode_json = msgspec.json.Encoder().encode


def log(event: Event) -> None:
    """Built-in handler: print one line per event to stdout (the demo stream uses it)."""
    payload = event.payload
    if isinstance(payload, bytes):
        text = repr(payload)
    else:
        try:
            text = _encode_json(payload).decode()
        except (TypeError, msgspec.EncodeError):
            text = repr(payload)
    sys.stdout.write(f"{event.stream} {event.id} delivery={event.delivery} {text}\n")
    sys.stdout.flush()
