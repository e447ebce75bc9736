"""How handlers are found and checked (README "Handlers"): [daemon] handler-path, errors that
name the config file, the stream and the field, a signature check, and the README's own Python
handler example run by a real daemon."""

from __future__ import annotations

import re
from pathlib import Path

import redis

from tests.servers import Server
from tests.support import DaemonProcess, run_edged, wait_for, write_config

README = Path(__file__).parent.parent / "README.md"


def readme_handler() -> str:
    """The Python handler example of README's "Handlers" section."""
    section = README.read_text().split("\n## Handlers\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Handlers section lost its Python example"
    return match.group(1)


def test_the_readme_example_runs_from_handler_path(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    """The example, saved as thermo.py in a handler-path directory: a good reading is handled
    and acked, one without celsius is dead-lettered at once."""
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "thermo.py").write_text(readme_handler())
    cfg = write_config(tmp_path / "c.toml",
                       [{"stream": stream, "handler": "thermo:apply", "start-id": "0"}],
                       daemon={"consumer": "thermo", "handler-path": [str(handlers)]})
    assert run_edged("config", "validate", "-c", str(cfg)).returncode == 0
    good = r.xadd(stream, {"payload": b'{"celsius": 21.5}'}).decode()
    r.xadd(stream, {"payload": b'{"kelvin": 300}'})
    d = DaemonProcess(cfg, server.url, tmp_path / "d.log")
    spawned.append(d)
    d.wait_output(f"{stream} {good}: 21.5 C")
    wait_for(lambda: r.xlen(f"{stream}:dead") == 1, 20, what="the bad reading dead-lettered")
    dead = r.xrange(f"{stream}:dead")[0][1]
    assert dead[b"edged-reason"] == b"rejected: no celsius field"
    wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, 20, what="all acked")


def test_handler_errors_name_the_file_the_stream_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "twoargs.py").write_text("def handle(event, extra):\n    pass\n")
    cases = {
        "nosuchmodule:run": ("cannot import module 'nosuchmodule'", "handler-path"),
        "twoargs:handle": ("must take one argument, the Event", "handle(event, extra)"),
    }
    for handler, expected in cases.items():
        cfg = write_config(tmp_path / "c.toml", [{"stream": "orders", "handler": handler}],
                           daemon={"handler-path": [str(tmp_path)]})
        out = run_edged("config", "validate", "-c", str(cfg))
        assert out.returncode == 78, out.stderr
        line = out.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        for part in (str(cfg), "$.streams[0].handler", "stream orders", *expected):
            assert part in line, (part, line)


def test_a_handler_path_that_is_not_a_directory_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", [{"stream": "s", "handler": "edged.handlers:log"}],
                       daemon={"handler-path": [str(tmp_path / "missing")]})
    out = run_edged("config", "validate", "-c", str(cfg))
    assert out.returncode == 78 and "$.daemon.handler-path[0]" in out.stderr, out.stderr
