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

import anyio
import anyio.to_thread
import msgspec

from edged.config import ExecHandler, StreamConfig, config_error
from edged.events import Event
from edged.handlers.exec import run_exec

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
    except ValueError as exc:
        raise config_error(source, f"$.streams[{index}].handler", str(exc)) from None
    if inspect.iscoroutinefunction(fn):
        return fn
    # Sync handlers run in worker threads, at most `concurrency` at once for this stream.
    limiter = anyio.CapacityLimiter(cfg.concurrency)

    async def thread_call(event: Event) -> Any:
        return await anyio.to_thread.run_sync(fn, event, limiter=limiter)

    return thread_call


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
