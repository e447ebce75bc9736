"""Start-up cost, held by what gets imported (issue 14): `edged --help` and `--version` import
no Redis client, event loop, serializer, metrics or library code; the daemon carries no help
renderer, and no HTTP server or outbox its config does not ask for. No timings here: each
check runs in a fresh interpreter and looks at ``sys.modules``, so a top-level import added
back fails it whatever the machine's speed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import REPO, write_config
from tests.support import test_env as edged_env

# What a command that talks to Redis needs, and `--help` must not pay for.
HEAVY = ["redis", "hiredis", "anyio", "msgspec", "prometheus_client", "sqlite3", "http.client"]
# edged's own modules that only a running command needs.
LIBRARY = ["edged.config", "edged.events", "edged.admin", "edged.daemon", "edged.consume",
           "edged.connect", "edged.handlers", "edged.state", "edged.embedded", "edged.outbox"]
# Help rendering: typer loads it for --help and usage errors only.
HELP_RENDERING = ["rich", "markdown_it", "pygments", "typer.rich_utils"]


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded once ``code`` ran (SystemExit included)."""
    wrapper = textwrap.dedent("""
        import json, sys
        try:
            exec(compile(sys.argv[1], "<test>", "exec"), {"__name__": "__test__"})
        except SystemExit:
            pass
        sys.stdout.flush()
        sys.__stderr__.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
    """)
    result = subprocess.run([sys.executable, "-c", wrapper, code], capture_output=True, text=True,
                            env=edged_env(), cwd=REPO, timeout=60)
    lines = [x for x in result.stderr.splitlines() if x.startswith("MODULES ")]
    assert result.returncode == 0 and lines, (code, result.stdout, result.stderr)
    return set(json.loads(lines[-1].removeprefix("MODULES ")))


def _cli(*argv: str) -> str:
    return f"import sys; sys.argv = ['edged', *{list(argv)!r}]\nfrom edged.cli import main\nmain()"


def _loaded(modules: set[str], packages: list[str]) -> list[str]:
    """Which of ``packages`` (or a module under one) are in ``modules``."""
    return [p for p in packages if any(m == p or m.startswith(p + ".") for m in modules)]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["pending", "-h"], ["dlq", "list", "-h"]])
def test_help_imports_no_redis_event_loop_or_library(argv: list[str]) -> None:
    modules = _modules_after(_cli(*argv))
    assert "edged.cli.inspect" in modules  # every command was registered
    assert _loaded(modules, HEAVY) == []
    assert _loaded(modules, LIBRARY) == []


def test_version_imports_no_help_renderer_either() -> None:
    modules = _modules_after(_cli("--version"))
    assert _loaded(modules, HEAVY + LIBRARY + HELP_RENDERING) == []


def test_the_handlers_api_is_still_at_the_package() -> None:
    modules = _modules_after(textwrap.dedent("""
        import edged
        from edged import Event, Reject, Retry
        from edged.events import Event as E, Reject as J, Retry as R
        assert (Event, Reject, Retry) == (E, J, R) == (edged.Event, edged.Reject, edged.Retry)
        try:
            edged.Nothing
        except AttributeError:
            pass
        else:
            raise AssertionError("edged.Nothing")
    """))
    assert "edged.events" in modules


def test_start_imports_the_daemon_without_help_rendering(tmp_path: Path) -> None:
    """`edged start` up to its preflight (a handler that cannot be imported: exit 78): the
    daemon is imported by then, and no help renderer is."""
    config = write_config(tmp_path / "edged.toml",
                          [{"stream": "s", "handler": "no_such_module_anywhere:handle"}])
    modules = _modules_after(_cli("start", "-c", str(config)))
    assert "edged.daemon.run" in modules
    assert _loaded(modules, HELP_RENDERING) == []


@pytest.mark.parametrize(("listen", "loaded"), [("", False), ("127.0.0.1:1", True)])
def test_the_daemon_imports_http_and_metrics_only_with_listen(
        tmp_path: Path, listen: str, loaded: bool) -> None:
    """A daemon built from its config (no I/O yet), and its HTTP server made if it has one."""
    config = write_config(tmp_path / "edged.toml", [{"stream": "s", "handler": "edged.handlers:log"}],
                          daemon={"listen": listen})
    modules = _modules_after(textwrap.dedent(f"""
        from edged.config import load_config
        from edged.daemon.run import Daemon
        daemon = Daemon(load_config({str(config)!r}), "redis://127.0.0.1:1/0")
        assert (daemon._http_server() is not None) == {loaded!r}
    """))
    assert "edged.daemon.run" in modules
    assert _loaded(modules, ["prometheus_client", "http.server"]) == (
        ["prometheus_client", "http.server"] if loaded else [])
    assert _loaded(modules, ["sqlite3", "edged.outbox", *HELP_RENDERING]) == []
