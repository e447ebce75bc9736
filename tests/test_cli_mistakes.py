"""Every command, given the common mistakes of an operator (a URL without a scheme, a closed
port, a wrong password, an unknown stream or group, a bad id, a bad duration), answers with one
line naming the problem, no traceback, and the documented exit code (README "Exit codes")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from edged.cli import app
from tests.servers import Server, free_port

runner = CliRunner()
STREAM = "mistakes:stream"
ID = "1700000000000-0"
# Each command with the arguments it needs; where it takes -g and a duration option.
COMMANDS: list[tuple[list[str], bool, list[str]]] = [
    (["status"], False, ["--sample"]),
    (["groups", STREAM], False, ["--sample"]),
    (["pending", STREAM], True, []),
    (["pending", STREAM, "--detail"], True, ["--idle"]),
    (["consumers", STREAM], True, []),
    (["claim", STREAM, ID, "--to", "other"], True, []),
    (["ack", STREAM, ID, "--yes"], True, []),
    (["trim", STREAM, "--dry-run"], False, []),
    (["publish", STREAM, "{}"], False, ["--wait-timeout"]),
    (["dlq", "list", STREAM], False, []),
    (["dlq", "show", STREAM, ID], False, []),
    (["dlq", "replay", STREAM, "--all"], False, []),
]
EXIT_CODES = {0, 1, 2, 69, 77, 78}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(port=free_port(), data_dir=tmp_path_factory.mktemp("locked"),
                 extra=["--requirepass", "right"]).start()
    yield srv
    srv.stop()


def _run(argv: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, argv, env={"EDGED_CONFIG": "", "EDGED_REDIS_URL": ""})
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        argv, result.exception)
    return result.exit_code, result.output


def _one_line(argv: list[str], code: int, output: str, expected: int | None) -> None:
    assert "Traceback" not in output, (argv, output)
    assert code in EXIT_CODES, (argv, code, output)
    if expected is not None:
        assert code == expected, (argv, code, output)
    if code != 0:
        lines = output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edged: "), (argv, output)


# `trim` without a config has nothing to trim and says so (exit 2) before it connects.
@pytest.mark.parametrize("argv", [c[0] for c in COMMANDS if c[0][0] != "trim"],
                         ids=lambda a: " ".join(a[:2]))
def test_connection_mistakes(argv: list[str], locked: Server) -> None:
    for url, expected in (("127.0.0.1:6379", 78), ("localhost", 78),
                          ("redis://127.0.0.1:1/0", 69),
                          (f"redis://:wrong@127.0.0.1:{locked.port}/0", 77)):
        code, output = _run([*argv, "--url", url])
        _one_line(argv, code, output, expected)
        assert "wrong" not in output, "a password in a URL is never echoed"


@pytest.mark.parametrize(("argv", "takes_group", "durations"), COMMANDS,
                         ids=lambda a: " ".join(a[:2]) if isinstance(a, list) else "")
def test_unknown_names_bad_ids_and_bad_durations(
        argv: list[str], takes_group: bool, durations: list[str], server: Server) -> None:
    url = ["--url", server.url]
    code, output = _run([*argv, *url])  # the stream does not exist: a clear answer either way
    _one_line(argv, code, output, None)
    if takes_group:
        code, output = _run([*argv, "-g", "no-such-group", *url])
        _one_line(argv, code, output, None)
    if ID in argv:
        bad = [a if a != ID else "not-an-id" for a in argv]
        code, output = _run([*bad, *url])
        _one_line(bad, code, output, 2)
        assert "not-an-id" in output
    for option in durations:
        code, output = _run([*argv, option, "5x", *url])
        _one_line(argv, code, output, 2)
        assert option in output
