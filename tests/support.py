"""Helpers shared by the tests: deadlines instead of sleeps, daemon subprocesses, configs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
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
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_config(
    path: Path,
    streams: list[dict[str, Any]],
    daemon: dict[str, Any] | None = None,
    redis: dict[str, Any] | None = None,
) -> Path:
    """Write a config file; keys are given as in TOML (kebab-case)."""
    lines: list[str] = []
    if redis:
        lines.append("[redis]")
        lines += [f"{k} = {toml_value(v)}" for k, v in redis.items()]
    lines.append("[daemon]")
    daemon = {"listen": "", "shutdown-grace": "10s", **(daemon or {})}
    lines += [f"{k} = {toml_value(v)}" for k, v in daemon.items()]
    for s in streams:
        lines.append("[[streams]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in s.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def edged_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "edged.cli", *args]


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
    """An `edged start` subprocess whose output goes to a file the test can read."""

    def __init__(self, config: Path, url: str | None, log_path: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        args = ["start", "-c", str(config), *extra]
        if url:
            args += ["--url", url]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
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
                 what=f"daemon ready; output so far:\n{self.output()}")
        assert self.proc.poll() is None, f"daemon exited:\n{self.output()}"

    def wait_output(self, text: str, timeout: float = 20) -> None:
        wait_for(lambda: text in self.output(), timeout,
                 what=f"{text!r} in daemon output:\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

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
