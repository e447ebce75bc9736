"""The daemon and the CLI work as least-privilege ACL users, and ACL LOG shows no denial.

The rules are edged/acl.py's, the ones README.md documents.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import redis

from edged import acl
from edged.keys import DEAD_ID, DEAD_STREAM
from tests.servers import Server
from tests.support import DaemonProcess, run_edged, wait_for, write_config
from tests.support import test_env as edged_env


def make_user(r: redis.Redis, rule: str, keys: str) -> tuple[str, str]:
    user = f"u{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    r.execute_command("ACL", "SETUSER", *acl.setuser_args(user, password, keys, rule))
    return user, password


def denials(r: redis.Redis, user: str) -> list[str]:
    rows = r.execute_command("ACL", "LOG", "128")
    out = []
    for row in rows:
        entry = row if isinstance(row, dict) else dict(zip(row[::2], row[1::2], strict=False))
        text = {_s(k): _s(v) for k, v in entry.items()}
        if text.get("username") == user:
            out.append(f"{text.get('reason')} {text.get('object')}")
    return out


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_daemon_runs_as_the_documented_least_privilege_user(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """A daemon logs in as a user with acl.DAEMON on `<stream>*` and `edged:*` only, password
    from a file. It handles good entries, dead-letters a rejected one, retries a failing one via
    its reclaimer until max-deliveries, beats, forwards an entry published through its outbox,
    and stops cleanly (release path). Must hold: all of that worked and ACL LOG records no
    denial for the user; the password appears neither in the output nor in the process's
    argv."""
    user, password = make_user(r, acl.DAEMON, f"~{stream}* ~edged:*")
    pw_file = tmp_path / "pw"
    pw_file.write_text(password + "\n")
    cfg = write_config(
        tmp_path / "acl.toml",
        [{"stream": stream, "handler": "tests.handlers:record", "max-deliveries": 2,
          "retry-backoff": "50ms", "claim-idle": "1s", "claim-interval": "100ms"}],
        daemon={"consumer": f"acl-{user}", "heartbeat-interval": "200ms",
                "consumer-expiry": "1s"},
        redis={"username": user, "password-file": str(pw_file)},
        outbox={"path": str(tmp_path / "outbox"), "socket": str(tmp_path / "pub.sock")},
    )
    env = edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="acl")
    daemon = DaemonProcess(cfg, server.url, tmp_path / "d.log", env=env)
    spawned.append(daemon)
    daemon.wait_ready()
    cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
    r.xadd(stream, {"payload": b"{}"})
    r.xadd(stream, {"payload": b'{"reject": "no"}'})
    r.xadd(stream, {"payload": b'{"fail": true}'})
    wait_for(lambda: r.llen(f"{stream}:handled") == 1, what="good entry handled")
    wait_for(lambda: r.xlen(f"{stream}:dead") == 2, what="rejected and failing dead-lettered")
    wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, what="PEL drained")
    published = run_edged("publish", stream, "{}", "-c", str(cfg), "--via-daemon")
    assert published.returncode == 0, published.stderr
    wait_for(lambda: r.llen(f"{stream}:handled") == 2, what="the outbox's entry handled")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    daemon.stop()
    assert denials(r, user) == []
    assert password not in daemon.output()
    assert password.encode() not in cmdline


def test_cli_as_inspect_and_operate_users(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path
) -> None:
    """`edged publish --wait-replicas 0` runs as an acl.OPERATE user and `edged dlq list` as an
    acl.INSPECT user (password files via a config), `edged dlq replay` as the OPERATE user too.
    All succeed and ACL LOG records no denial;
    the inspect user cannot publish (exit 77, "no permissions" named)."""
    op_user, op_pw = make_user(r, acl.OPERATE, f"~{stream}*")
    in_user, in_pw = make_user(r, acl.INSPECT, f"~{stream}* ~edged:*")
    configs = {}
    for name, user, pw in (("op", op_user, op_pw), ("in", in_user, in_pw)):
        (tmp_path / f"{name}.pw").write_text(pw)
        configs[name] = write_config(
            tmp_path / f"{name}.toml", [],
            redis={"username": user, "password-file": str(tmp_path / f"{name}.pw")},
        )
    pub = run_edged("publish", stream, '{"a": 1}', "-c", str(configs["op"]), "--url", server.url)
    assert pub.returncode == 0, pub.stderr
    assert r.xlen(stream) == 1
    listing = run_edged("dlq", "list", stream, "-c", str(configs["in"]), "--url", server.url,
                        "--json")
    assert listing.returncode == 0, listing.stderr
    # A dead entry as edged writes them (its metadata first), replayed by the operate user.
    r.xadd(f"{stream}:dead", {DEAD_ID: "1-0", DEAD_STREAM: stream, "payload": b'{"b": 2}'})
    replay = run_edged("dlq", "replay", stream, "--all", "-c", str(configs["op"]), "--url",
                       server.url)
    assert replay.returncode == 0, replay.stderr
    assert r.xlen(stream) == 2 and r.xlen(f"{stream}:dead") == 0
    refused = run_edged("publish", stream, "{}", "-c", str(configs["in"]), "--url", server.url)
    assert refused.returncode == 77 and "no permissions" in refused.stderr
    assert denials(r, op_user) == []
    assert all("xadd" in d for d in denials(r, in_user))


def test_password_from_systemd_credentials_directory(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """No password-file in the config: the daemon reads the password from
    $CREDENTIALS_DIRECTORY/redis, as systemd's LoadCredential=redis:... provides it. It logs in
    as its ACL user and handles an entry; the password is not in its output, argv or config show."""
    user, password = make_user(r, acl.DAEMON, f"~{stream}* ~edged:*")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "redis").write_text(password)
    cfg = write_config(
        tmp_path / "creds.toml", [{"stream": stream, "handler": "tests.handlers:record"}],
        daemon={"consumer": f"creds-{user}"}, redis={"username": user},
    )
    env = edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="creds",
                    CREDENTIALS_DIRECTORY=str(creds))
    daemon = DaemonProcess(cfg, server.url, tmp_path / "creds.log", env=env)
    spawned.append(daemon)
    daemon.wait_ready()
    r.xadd(stream, {"payload": b"{}"})
    wait_for(lambda: r.llen(f"{stream}:handled") == 1, what="entry handled")
    cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
    daemon.stop()
    shown = run_edged("config", "show", "-c", str(cfg), env=env)
    assert shown.returncode == 0
    assert password not in daemon.output() + shown.stdout + shown.stderr
    assert password.encode() not in cmdline
    assert denials(r, user) == []


def test_readme_documents_exactly_these_rules() -> None:
    """README.md shows the same ACL rules the tests log in with (they cannot drift apart)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for rule in (acl.DAEMON, acl.INSPECT, acl.OPERATE, acl.SENTINEL, acl.CLUSTER):
        assert rule in readme
        assert "+@all" not in rule and "@dangerous" not in rule


def test_inspection_commands_as_the_inspect_user(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path
) -> None:
    """Every inspection command (pending with and without --detail, groups, consumers,
    status, dlq list) runs as an acl.INSPECT user on a stream with a pending entry. All exit 0
    with their --json, and ACL LOG records no command denied to the user."""
    r.xgroup_create(stream, "edged", id="0", mkstream=True)
    r.xadd(stream, {"payload": b"{}"})
    r.xreadgroup("edged", "someone", {stream: ">"})
    # `status` looks at every stream a live daemon reads: on this shared test server those are
    # other tests' streams, all named t:*.
    user, password = make_user(r, acl.INSPECT, "~t:* ~edged:*")
    (tmp_path / "pw").write_text(password)
    cfg = write_config(tmp_path / "in.toml", [],
                       redis={"username": user, "password-file": str(tmp_path / "pw")})
    base = ("-c", str(cfg), "--url", server.url, "--json")
    for args in (("pending", stream), ("pending", stream, "--detail"),
                 ("groups", stream, "--sample", "0s"), ("consumers", stream),
                 ("status", "--sample", "0s"), ("dlq", "list", stream)):
        res = run_edged(*args, *base)
        assert res.returncode == 0, (args, res.stderr)
    # `status` may meet streams outside the user's key patterns (other tests' leftovers found by
    # SCAN): it leaves them out, and ACL LOG notes those key denials. No command was denied.
    assert [d for d in denials(r, user) if not d.startswith("key ")] == []
