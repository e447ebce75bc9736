"""Helpers shared by the tests: deadlines instead of sleeps, daemon subprocesses, configs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def _describe(what: str | Callable[[], str], condition: Callable[[], Any]) -> str:
    if callable(what):
        return what()
    return what or repr(condition)


def wait_for(
    condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.02,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline.

    ``what`` may be a callable: it is then called at the deadline, so that the message shows
    logs or state as they are then, not as they were when the wait began.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {_describe(what, condition)}")
        time.sleep(interval)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def write_config(
    path: Path,
    streams: list[dict[str, Any]],
    daemon: dict[str, Any] | None = None,
    redis: dict[str, Any] | None = None,
    outbox: dict[str, Any] | None = None,
) -> Path:
    """Write a config file; keys are given as in TOML (kebab-case)."""
    lines: list[str] = []
    if redis:
        lines.append("[redis]")
        lines += [f"{k} = {toml_value(v)}" for k, v in redis.items()]
    lines.append("[daemon]")
    daemon = {"listen": "", "shutdown-grace": "10s", **(daemon or {})}
    lines += [f"{k} = {toml_value(v)}" for k, v in daemon.items()]
    if outbox is not None:
        lines.append("[outbox]")
        lines += [f"{k} = {toml_value(v)}" for k, v in outbox.items()]
    for s in streams:
        lines.append("[[streams]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in s.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def edged_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "edged", *args]


def test_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("EDGED_CONFIG", None)
    env.pop("EDGED_REDIS_URL", None)
    env.update(extra)
    return env


def run_edged(*args: str, input: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one edged command to completion."""
    return subprocess.run(
        edged_argv(*args), input=input, capture_output=True, text=True,
        env=env or test_env(), timeout=timeout, cwd=REPO,
    )


class DaemonProcess:
    """An `edged start` subprocess whose output goes to a file the test can read.

    Tests hand every one they start to the ``spawned`` fixture (tests/conftest.py), which
    kills any still running at teardown, by its pid.
    """

    def __init__(self, config: Path, url: str | None, log_path: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        args = ["start", "-c", str(config), *extra]
        if url:
            args += ["--url", url]
        self._spawn(args, log_path, env)

    @classmethod
    def command(cls, args: list[str], log_path: Path,
                env: dict[str, str] | None = None) -> DaemonProcess:
        """Any `edged <args>` (e.g. `start --embedded` without -c, `groups --watch`)."""
        self = cls.__new__(cls)
        self._spawn(args, log_path, env)
        return self

    def _spawn(self, args: list[str], log_path: Path, env: dict[str, str] | None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop() or at teardown
        self.proc = subprocess.Popen(
            edged_argv(*args), stdout=self._log, stderr=subprocess.STDOUT, env=env or test_env(),
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20) -> None:
        wait_for(lambda: "ready:" in self.output() or self.proc.poll() is not None, timeout,
                 what=lambda: f"daemon ready; output so far:\n{self.output()}")
        assert self.proc.poll() is None, f"daemon exited:\n{self.output()}"

    def wait_output(self, text: str, timeout: float = 20, count: int = 1) -> None:
        """Wait until ``text`` is in the output (``count`` times, if given)."""
        wait_for(lambda: self.output().count(text) >= count, timeout,
                 what=lambda: f"{text!r} in daemon output (x{count}):\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 20) -> int:
        """The exit code once the process has ended; fails with its output if it runs on."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running after {timeout}s:\n{self.output()}") from None

    def stop(self) -> None:
        """End the process if it still runs (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL by pid if it still runs (resumed first, in case the test paused it)."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class Fleet:
    """The daemons one test started, kept in the ``spawned`` list: at teardown any still
    running is killed by its pid (resumed first, if the test paused it). Handlers of
    tests.handlers record into ``url`` (the server under test unless told otherwise)."""

    def __init__(self, url: str, tmp_path: Path, procs: list[DaemonProcess],
                 redis: dict[str, Any] | None = None) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.procs = procs
        # The daemons' [redis] table (a cluster, say): then they consume there, not at ``url``,
        # and the handlers still record at ``url``.
        self.redis = redis

    def start(self, consumer: str, streams: list[dict[str, Any]],
              env: dict[str, str] | None = None, **daemon: Any) -> DaemonProcess:
        """Start `edged start` as ``consumer``; ``daemon`` are [daemon] settings, ``env`` more
        environment variables."""
        cfg = write_config(
            self.tmp_path / f"{consumer}.toml", streams,
            daemon={"consumer": consumer, "shutdown-grace": "5s", **daemon}, redis=self.redis,
        )
        env = test_env(EDGED_TEST_REDIS=self.url, EDGED_TEST_CONSUMER=consumer, **(env or {}))
        daemon_url = None if self.redis else self.url
        d = DaemonProcess(cfg, daemon_url, self.tmp_path / f"{consumer}.log", env=env)
        self.procs.append(d)
        return d

    def logs(self) -> str:
        return "\n".join(f"--- {d.log_path.name}:\n{d.output()}" for d in self.procs)


# --------------------------------------------------------------------------- in-process helpers


async def until(
    condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.01,  # noqa: ASYNC109
    what: str | Callable[[], str] = "",
) -> Any:
    """Async ``wait_for``: poll ``condition`` (sync or async) without blocking the event loop."""
    import inspect

    import anyio

    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {_describe(what, condition)}")
        await anyio.sleep(interval)


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # The state letter follows the command name in parentheses, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def make_consumer(client: Any, stream: str, handler: Any, *, consumer: str = "c1",
                  read_block: float = 0.05, **cfg: Any) -> Any:
    """A StreamConsumer over ``client`` (see ``edged_client``); ``cfg`` are StreamConfig fields.

    Groups start at ``0`` unless told otherwise, so entries added before ``run`` are read.
    """
    from edged.config import StreamConfig
    from edged.consume.consumer import StreamConsumer
    from edged.scripts import Scripts

    cfg.setdefault("start_id", "0")
    stream_cfg = StreamConfig(stream=stream, handler=cfg.pop("handler_spec", "x:y"), **cfg)
    return StreamConsumer(client, Scripts(client), stream_cfg, consumer=consumer,
                          handler=handler, read_block=read_block)


def edged_client(url: str, **kwargs: Any) -> Any:
    """An asyncio client configured the way the daemon configures its own."""
    from edged.config import RedisConfig
    from edged.connect.client import make_client
    from edged.consume.reader import use_raw_stream_replies

    client = make_client(RedisConfig(), url=url, **kwargs)
    use_raw_stream_replies(client)
    return client


class Consuming:
    """``async with Consuming(consumer) as run:`` runs ``consumer.run()`` in a task.

    On leaving normally the consumer is stopped with ``grace`` and run() must return in time;
    on an error the task is cancelled so a failing test never hangs. ``run.done`` is set when
    run() has returned.
    """

    def __init__(self, consumer: Any, grace: float = 5.0) -> None:
        self.consumer = consumer
        self.grace = grace

    async def __aenter__(self) -> Consuming:
        import anyio

        self.done = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()

        async def go() -> None:
            try:
                await self.consumer.run()
            finally:
                self.done.set()

        self._tg.start_soon(go)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        import anyio

        timed_out = False
        try:
            if exc_type is None:
                self.consumer.stop(anyio.current_time() + self.grace)
                with anyio.move_on_after(self.grace + 10) as scope:
                    await self.done.wait()
                if scope.cancelled_caught:
                    timed_out = True
                    self._tg.cancel_scope.cancel()
            else:
                self._tg.cancel_scope.cancel()
        finally:
            result = await self._tg.__aexit__(exc_type, exc, tb)
        if timed_out:
            raise AssertionError(f"run() did not return within {self.grace + 10}s of stop()")
        return result


def pending_rows(r: Any, stream: str, group: str = "edged") -> list[dict[str, Any]]:
    """XPENDING detail rows as {"id", "consumer", "deliveries"} with str/int values."""
    rows = r.xpending_range(stream, group, min="-", max="+", count=10_000)
    return [
        {"id": row["message_id"].decode(), "consumer": row["consumer"].decode(),
         "deliveries": int(row["times_delivered"])}
        for row in rows
    ]
