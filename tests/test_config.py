"""Config decoding: good files load, every bad file is refused with its path, never a traceback."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.config import MAX_CLAIM_IDLE, Config, load_config, parse_config, redact_url
from edged.durations import Duration
from edged.errors import ConfigError
from edged.scripts import RELEASE_IDLE_MS
from tests.support import run_edged, write_config
from tests.support import test_env as edged_env

GOOD = """
[redis]
url = "redis://127.0.0.1:6379/0"
username = "edged"
password-file = "/run/credentials/edged.service/redis"

[daemon]
consumer = "{hostname}-a"
listen = "127.0.0.1:9478"
shutdown-grace = "30s"

[[streams]]
stream = "edge:config"
group = "edged"
handler = "edged.handlers:log"
concurrency = 16
claim-idle = "1m30s"
claim-interval = "500ms"
max-deliveries = 5

[[streams]]
stream = "edge:jobs"
handler = { exec = ["/bin/true"], timeout = "5s" }
codec = "raw"
"""


def test_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "edged.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.streams[0].claim_idle.seconds == 90
    assert cfg.streams[0].claim_interval.ms == 500
    assert cfg.streams[0].dead_letter_stream == "edge:config:dead"
    assert cfg.streams[1].group == "edged"
    assert cfg.streams[1].handler.exec == ["/bin/true"]  # type: ignore[union-attr]
    assert cfg.daemon.consumer_name().endswith("-a")
    assert "{hostname}" not in cfg.daemon.consumer_name()


@pytest.mark.parametrize(
    ("snippet", "where"),
    [
        ('[daemon]\nbogus = 1\n', "$.daemon"),
        ('[[streams]]\nstream = "s"\nhandler = "a:b"\nclaim-idle = "5x"\n', "$.streams[0].claim-idle"),
        ('[[streams]]\nstream = "s"\nhandler = "a:b"\nclaim-idle = 5\n', "$.streams[0].claim-idle"),
        ('[[streams]]\nstream = "s"\nhandler = "a:b"\nconcurrency = 0\n', "$.streams[0].concurrency"),
        ('[[streams]]\nstream = "s"\nhandler = "nocolon"\n', "$.streams[0]"),
        ('[[streams]]\nstream = "s"\nhandler = "a:b"\ncodec = "xml"\n', "$.streams[0].codec"),
        ('[[streams]]\nstream = "s"\n', "$.streams[0]"),
        ('[redis]\nurl = "http://x"\n', "$.redis"),
        ('[redis]\nurl = "redis://x"\n[redis.sentinel]\nhosts = ["a:1"]\nservice = "m"\n', "$.redis"),
        ('[daemon]\nlisten = "nowhere"\n', "$.daemon"),
    ],
)
def test_bad_config_names_the_path(tmp_path: Path, snippet: str, where: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(snippet)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert where in str(info.value)


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[daemon]\nconsumer = "a\n')
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML: .*line 2"):
        load_config(path)


def test_validate_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    good.write_text(GOOD.replace("/run/credentials/edged.service/redis", str(secret)))
    ok = run_edged("config", "validate", "-c", str(good))
    assert ok.returncode == 0, ok.stderr
    bad = write_config(tmp_path / "bad.toml", [{"stream": "s", "handler": "no.such.module:fn"}])
    res = run_edged("config", "validate", "-c", str(bad))
    assert res.returncode == 78
    assert "$.streams[0].handler" in res.stderr and "no.such.module" in res.stderr
    assert str(bad) in res.stderr
    assert "Traceback" not in res.stderr
    missing = run_edged("config", "validate", "-c", str(tmp_path / "nope.toml"))
    assert missing.returncode == 78 and "no such config file" in missing.stderr


def test_start_with_bad_config_exits_78_before_connecting(tmp_path: Path) -> None:
    # Port 1 on loopback: if start-up tried to connect it would retry forever, not exit 78.
    bad = write_config(tmp_path / "bad.toml", [{"stream": "s", "handler": "x:y", "claim-idle": "soon"}])
    res = run_edged("start", "-c", str(bad), "--url", "redis://127.0.0.1:1/0", timeout=30)
    assert res.returncode == 78, res.stderr
    assert "$.streams[0].claim-idle" in res.stderr
    assert "Traceback" not in res.stderr


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml", [{"stream": "s", "handler": "edged.handlers:log"}],
        redis={"url": "redis://edged:hunter2-secret@127.0.0.1:6379/0", "password-file": "/x/pw"},
    )
    res = run_edged("config", "show", "-c", str(path))
    assert res.returncode == 0, res.stderr
    assert "hunter2-secret" not in res.stdout
    assert "***" in res.stdout and "/x/pw" in res.stdout



def test_claim_idle_above_12h_is_refused() -> None:
    ok = parse_config({"streams": [{"stream": "s", "handler": "a:b", "claim-idle": "12h"}]})
    assert ok.streams[0].claim_idle == MAX_CLAIM_IDLE
    with pytest.raises(ConfigError) as info:
        parse_config({"streams": [{"stream": "s", "handler": "a:b", "claim-idle": "12h1s"}]}, "big.toml")
    message = str(info.value)
    assert message.startswith("big.toml: ") and "$.streams[0]" in message
    assert "claim-idle" in message and "12h" in message


def test_released_entries_look_idle_longer_than_any_claim_idle() -> None:
    """A handed-back entry must be claimable at once by every peer, whatever its claim-idle."""
    assert MAX_CLAIM_IDLE.ms < RELEASE_IDLE_MS


def test_duration_parsing() -> None:
    assert Duration.parse("500ms").seconds == 0.5
    assert Duration.parse("1h30m").seconds == 5400
    assert str(Duration.parse("90s")) == "90s"
    assert str(Duration(120)) == "2m"
    for bad in ("", "5", "s", "-1s", "1.5.2s", "10 parsecs"):
        with pytest.raises(ValueError, match="duration"):
            Duration.parse(bad)


# ---------------------------------------------------------------- checked before start
#
# Every value that could fail at start-up is refused by `config validate` and by `start` alike,
# before any connection: exit 78, one line naming the file and the field, never a traceback, never
# a secret. `start` gets --url of a port where nothing listens: had it tried to connect it would
# retry forever (and run_edged's timeout would fail the test), not exit 78.

DOWN = "redis://127.0.0.1:1/0"
LOG = "edged.handlers:log"
SECRET = "hunter2-do-not-print"


def _stream(**extra: Any) -> dict[str, Any]:
    return {"stream": "s", "handler": LOG, **extra}


def _bad(id: str, where: str, streams: list[dict[str, Any]] | None = None, **tables: Any) -> Any:
    """One bad config: ``streams`` (default: one good stream), ``daemon=`` / ``redis=`` tables;
    ``where`` is the path the message must name. ``{tmp}`` in strings is the test's temp dir."""
    streams = [_stream()] if streams is None else streams
    return pytest.param(streams, tables.get("daemon"), tables.get("redis"), where, id=id)


BAD_VALUES = [
    # 1. start-id: "$", "0", <ms> or <ms>-<seq>, ASCII digits, each part below 2**64
    _bad("start-id-letters", "$.streams[1].start-id",
         [_stream(), _stream(stream="t", **{"start-id": "abc"})]),
    _bad("start-id-half", "$.streams[0].start-id", [_stream(**{"start-id": "1-"})]),
    _bad("start-id-negative", "$.streams[0].start-id", [_stream(**{"start-id": "-1"})]),
    _bad("start-id-arabic-digits", "$.streams[0].start-id", [_stream(**{"start-id": "١٢-٣"})]),
    _bad("start-id-above-2**64", "$.streams[0].start-id",
         [_stream(**{"start-id": f"{2**64}-0"})]),
    _bad("start-id-plus", "$.streams[0].start-id", [_stream(**{"start-id": "+"})]),
    # 2. db: 0..65535
    _bad("db-negative", "$.redis.db", redis={"db": -1}),
    _bad("db-absurd", "$.redis.db", redis={"db": 65536}),
    # 3. URL: port 1..65535, path a db number, only ?db=N, a socket path for unix://
    _bad("url-port-letters", "$.redis.url", redis={"url": f"redis://edged:{SECRET}@127.0.0.1:abc/0"}),
    _bad("url-port-zero", "$.redis.url", redis={"url": "redis://127.0.0.1:0/0"}),
    _bad("url-port-too-big", "$.redis.url", redis={"url": f"rediss://:{SECRET}@127.0.0.1:65536/0"}),
    _bad("url-password-without-at", "$.redis.url", redis={"url": f"redis://edged:{SECRET}/0"}),
    _bad("url-db-letters", "$.redis.url", redis={"url": "redis://127.0.0.1:6379/zero"}),
    _bad("url-db-absurd", "$.redis.url", redis={"url": "redis://127.0.0.1:6379/65536"}),
    _bad("url-query-option", "$.redis.url", redis={"url": "redis://127.0.0.1:6379/0?protocol=3"}),
    _bad("url-unbalanced-brackets", "$.redis.url", redis={"url": "redis://[::1:6379/0"}),
    _bad("url-unix-no-path", "$.redis.url", redis={"url": "unix://"}),
    _bad("url-unix-with-tls", "$.redis.tls", redis={"url": "unix:///tmp/r.sock", "tls": {"verify": False}}),
    # 4. durations have bounds
    _bad("heartbeat-0s", "$.daemon.heartbeat-interval", daemon={"heartbeat-interval": "0s"}),
    _bad("heartbeat-1000d", "$.daemon.heartbeat-interval", daemon={"heartbeat-interval": "1000d"}),
    _bad("read-block-0s", "$.daemon.read-block", daemon={"read-block": "0s"}),
    _bad("consumer-expiry-0s", "$.daemon.consumer-expiry", daemon={"consumer-expiry": "0s"}),
    _bad("shutdown-grace-2h", "$.daemon.shutdown-grace", daemon={"shutdown-grace": "2h"}),
    _bad("connect-timeout-0s", "$.redis.connect-timeout", redis={"connect-timeout": "0s"}),
    _bad("claim-interval-0s", "$.streams[0].claim-interval", [_stream(**{"claim-interval": "0s"})]),
    _bad("claim-idle-50ms", "$.streams[0].claim-idle", [_stream(**{"claim-idle": "50ms"})]),
    _bad("claim-idle-13h", "$.streams[0].claim-idle", [_stream(**{"claim-idle": "13h"})]),
    _bad("retry-backoff-0s", "$.streams[0].retry-backoff", [_stream(**{"retry-backoff": "0s"})]),
    _bad("retry-backoff-max-below-backoff", "$.streams[0].retry-backoff-max",
         [_stream(**{"retry-backoff": "10s", "retry-backoff-max": "1s"})]),
    _bad("exec-timeout-0s", "$.streams[0].handler.timeout",
         [_stream(handler={"exec": ["/bin/true"], "timeout": "0s"})]),
    # 5. dead-letter never a stream edged reads; a stream and group pair once
    _bad("dead-letter-is-itself", "$.streams[0].dead-letter", [_stream(**{"dead-letter": "s"})]),
    _bad("dead-letter-is-another-stream", "$.streams[0].dead-letter",
         [_stream(**{"dead-letter": "t"}), _stream(stream="t")]),
    _bad("default-dead-letter-is-read", "$.streams[0].dead-letter", [_stream(), _stream(stream="s:dead")]),
    _bad("same-stream-and-group-twice", "$.streams[1]", [_stream(), _stream(concurrency=2)]),
    # 6. password files, TLS files and handlers: named by field, never their contents
    _bad("password-file-missing", "$.redis.password-file", redis={"password-file": "{tmp}/no-such-pw"}),
    _bad("password-file-a-directory", "$.redis.password-file", redis={"password-file": "{tmp}"}),
    _bad("password-file-not-utf8", "$.redis.password-file", redis={"password-file": "{tmp}/binary-pw"}),
    _bad("password-file-empty", "$.redis.password-file", redis={"password-file": "{tmp}/empty-pw"}),
    _bad("sentinel-password-file-missing", "$.redis.sentinel.password-file",
         redis={"sentinel": {"hosts": ["127.0.0.1:1"], "service": "m", "password-file": "{tmp}/no"}}),
    _bad("tls-ca-file-missing", "$.redis.tls.ca-file", redis={"tls": {"ca-file": "{tmp}/no-ca.pem"}}),
    _bad("tls-ca-file-not-pem", "$.redis.tls.ca-file", redis={"tls": {"ca-file": "{tmp}/secret-pw"}}),
    _bad("tls-cert-and-key-not-pem", "$.redis.tls.cert-file",
         redis={"tls": {"cert-file": "{tmp}/secret-pw", "key-file": "{tmp}/secret-pw"}}),
    _bad("tls-cert-without-key", "$.redis.tls.key-file", redis={"tls": {"cert-file": "{tmp}/secret-pw"}}),
    _bad("handler-module-not-found", "$.streams[0].handler", [_stream(handler="no_such_module_x:fn")]),
    _bad("handler-attribute-missing", "$.streams[0].handler", [_stream(handler="edged.handlers:nope")]),
    _bad("handler-not-callable", "$.streams[0].handler", [_stream(handler="edged.config:DEFAULT_REDIS_URL")]),
    _bad("handler-not-dotted-names", "$.streams[0].handler", [_stream(handler="edged.handlers:lo g")]),
    _bad("handler-submodule-not-found", "$.streams[0].handler", [_stream(handler="tests.no_such.x:fn")]),
    _bad("exec-program-missing", "$.streams[0].handler.exec[0]",
         [_stream(handler={"exec": ["{tmp}/no-such-program"]})]),
    _bad("exec-program-not-executable", "$.streams[0].handler.exec[0]",
         [_stream(handler={"exec": ["{tmp}/secret-pw"]})]),
    _bad("exec-program-not-in-path", "$.streams[0].handler.exec[0]",
         [_stream(handler={"exec": ["no-such-program-in-path-x"]})]),
    # 7. the other values start-up uses
    _bad("sentinel-host-bad-port", "$.redis.sentinel.hosts[1]",
         redis={"sentinel": {"hosts": ["127.0.0.1:26379", "127.0.0.1:x"], "service": "m"}}),
    _bad("sentinel-host-with-space", "$.redis.sentinel.hosts[0]",
         redis={"sentinel": {"hosts": ["bad host:26379"], "service": "m"}}),
    _bad("sentinel-service-empty", "$.redis.sentinel.service",
         redis={"sentinel": {"hosts": ["127.0.0.1:26379"], "service": ""}}),
    _bad("listen-port-zero", "$.daemon.listen", daemon={"listen": "127.0.0.1:0"}),
    _bad("listen-bad-host", "$.daemon.listen", daemon={"listen": "local host:9478"}),
    _bad("listen-ipv6-without-address", "$.daemon.listen", daemon={"listen": "[]:9478"}),
    _bad("consumer-with-space", "$.daemon.consumer", daemon={"consumer": "edge 1"}),
    _bad("consumer-unknown-placeholder", "$.daemon.consumer", daemon={"consumer": "{hostnme}-a"}),
    _bad("key-prefix-glob", "$.daemon.key-prefix", daemon={"key-prefix": "edged*"}),
    _bad("username-empty", "$.redis.username", redis={"username": ""}),
    _bad("max-deliveries-0", "$.streams[0].max-deliveries", [_stream(**{"max-deliveries": 0})]),
    _bad("concurrency-above-10000", "$.streams[0].concurrency", [_stream(concurrency=10_001)]),
    _bad("no-streams", "$.streams", []),
]


def _fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, list):
        return [_fill(v, tmp) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, tmp) for k, v in value.items()}
    return value


def _secret_files(tmp: Path) -> None:
    (tmp / "binary-pw").write_bytes(b"\xff" + SECRET.encode() + b"\n")
    (tmp / "empty-pw").write_text("")
    (tmp / "secret-pw").write_text(SECRET + "\n")


def _assert_refused(res: Any, path: str, where: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 78, out
    assert "Traceback" not in out, out
    assert f"edged: {path}: " in res.stderr, res.stderr
    assert f"`{where}`" in res.stderr, res.stderr
    assert SECRET not in out, out
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize(("streams", "daemon", "redis", "where"), BAD_VALUES)
def test_bad_value_is_refused_by_validate_and_start(
    tmp_path: Path, streams: list[dict[str, Any]], daemon: dict[str, Any] | None,
    redis: dict[str, Any] | None, where: str,
) -> None:
    _secret_files(tmp_path)
    path = write_config(tmp_path / "edge.toml", _fill(streams, tmp_path),
                        daemon=_fill(daemon, tmp_path), redis=_fill(redis, tmp_path))
    _assert_refused(run_edged("config", "validate", "-c", str(path)), str(path), where)
    _assert_refused(run_edged("start", "-c", str(path), "--url", DOWN, timeout=30), str(path), where)


@pytest.mark.parametrize(
    "url",
    [f"redis://edged:{SECRET}@127.0.0.1:abc/0", f"redis://:{SECRET}@127.0.0.1:70000/0",
     "redis://127.0.0.1:0/0", f"redis://edged:{SECRET}/0", "http://127.0.0.1:6379/0",
     "redis://127.0.0.1:6379/0?socket_timeout=x"],
    ids=["port-letters", "port-too-big", "port-zero", "password-without-at", "http", "query-option"],
)
def test_bad_url_override_names_its_source(tmp_path: Path, url: str) -> None:
    """--url and $EDGED_REDIS_URL are checked like the config's url, named as where they came
    from, and their password is never printed; the other commands exit 78 on them too."""
    path = write_config(tmp_path / "edge.toml", [_stream()])
    runs = {
        "--url": run_edged("start", "-c", str(path), "--url", url, timeout=30),
        "$EDGED_REDIS_URL": run_edged("start", "-c", str(path), env=edged_env(EDGED_REDIS_URL=url),
                                      timeout=30),
    }
    validate = run_edged("config", "validate", "-c", str(path), env=edged_env(EDGED_REDIS_URL=url))
    runs["$EDGED_REDIS_URL "] = validate
    for source, res in runs.items():
        out = res.stdout + res.stderr
        assert res.returncode == 78, (source, out)
        assert res.stderr.startswith(f"edged: {source.strip()}: "), (source, out)
        assert SECRET not in out and "Traceback" not in out, (source, out)
    other = run_edged("pending", "s", "--url", url, timeout=30)
    assert other.returncode == 78, other.stderr
    assert other.stderr.startswith("edged: --url: "), other.stderr
    assert SECRET not in other.stdout + other.stderr and "Traceback" not in other.stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [("start-id", "$"), ("start-id", "0"), ("start-id", "1712345678901"), ("start-id", "1712345678901-7"),
     ("start-id", f"{2**64 - 1}-{2**64 - 1}"), ("claim-idle", "100ms"), ("claim-idle", "12h"),
     ("claim-interval", "100ms"), ("retry-backoff", "10ms"), ("dead-letter", "elsewhere")],
)
def test_edge_values_of_a_stream_are_accepted(key: str, value: str) -> None:
    cfg = parse_config({"streams": [{"stream": "s", "handler": "a.b:c.d", key: value}]})
    assert cfg.streams[0].stream == "s"


@pytest.mark.parametrize(
    ("table", "values"),
    [("redis", {"db": 65535}), ("redis", {"url": "redis://[::1]:6379/15"}),
     ("redis", {"url": "rediss://edged:pw@cache.example-1.internal:6380/"}),
     ("redis", {"url": "unix:///run/redis/redis.sock?db=3"}), ("redis", {"url": "redis://h:6379"}),
     ("redis", {"connect-timeout": "100ms"}),
     ("daemon", {"heartbeat-interval": "100ms", "consumer-expiry": "1s", "shutdown-grace": "0s"}),
     ("daemon", {"listen": "[::1]:9478"}), ("daemon", {"listen": "0.0.0.0:9478"}),
     ("daemon", {"listen": "my_host.local:1"}), ("daemon", {"consumer": "edge-{hostname}~1"}),
     ("daemon", {"read-block": "1ms"})],
)
def test_edge_values_of_redis_and_daemon_are_accepted(table: str, values: dict[str, Any]) -> None:
    assert isinstance(parse_config({table: values}), Config)


def test_redact_url_survives_a_bad_port() -> None:
    assert redact_url(f"redis://edged:{SECRET}@h:abc/0") == "redis://edged:***@h:abc/0"
    assert redact_url(f"redis://:{SECRET}@[::1]:6379/0?db=1") == "redis://:***@[::1]:6379/0?db=1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"


def test_good_tls_files_and_password_pass_validate(tmp_path: Path) -> None:
    """The checks load real files without complaint: a CA, a client certificate and its key
    (made with openssl), a password file."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", "k.pem",
         "-out", "c.pem", "-subj", "/CN=edged test"], cwd=tmp_path, check=True, capture_output=True,
    )
    (tmp_path / "pw").write_text(SECRET + "\n")
    tls = {"ca-file": str(tmp_path / "c.pem"), "cert-file": str(tmp_path / "c.pem"),
           "key-file": str(tmp_path / "k.pem")}
    path = write_config(tmp_path / "edge.toml", [_stream(), _stream(stream="t", handler={"exec": ["true"]})],
                        redis={"password-file": str(tmp_path / "pw"), "tls": tls})
    res = run_edged("config", "validate", "-c", str(path))
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout + res.stderr


# ---------------------------------------------------------------- fuzzing

_keys = st.sampled_from(
    ["stream", "group", "handler", "concurrency", "claim-idle", "claim-interval", "max-deliveries",
     "dead-letter", "codec", "start-id", "bogus", "consumer", "listen", "shutdown-grace", "url"]
)
_values = st.one_of(
    st.integers(-5, 100_000), st.text(max_size=12), st.booleans(), st.floats(allow_nan=False),
    st.sampled_from(["30s", "5x", "0s", "1h", "a:b", "edged.handlers:log", "json", "redis://h:1"]),
    st.lists(st.integers(), max_size=2),
)
_tables = st.dictionaries(_keys, _values, max_size=6)


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    """Random, mostly wrong, config documents (and some broken TOML)."""
    doc = {
        "daemon": draw(_tables),
        "streams": draw(st.lists(_tables, max_size=2)),
    }
    if draw(st.booleans()):
        doc["redis"] = draw(_tables)
    text = "\n".join(
        [f"[{name}]\n" + "\n".join(f'"{k}" = {_toml(v)}' for k, v in tbl.items())
         for name, tbl in doc.items() if isinstance(tbl, dict)]
        + ["[[streams]]\n" + "\n".join(f'"{k}" = {_toml(v)}' for k, v in tbl.items())
           for tbl in doc["streams"]]  # type: ignore[union-attr]
    )
    if draw(st.booleans()):
        cut = draw(st.integers(0, max(len(text), 1)))
        text = text[:cut] + draw(st.sampled_from(["", "[", "=", '"', "\x00", "]]"]))
    return text


def _toml(v: object) -> str:
    from tests.support import toml_value

    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else "0.0"
    if isinstance(v, str):
        return toml_value("".join(c for c in v if c.isprintable()))
    return toml_value(v)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(toml_documents())
def test_fuzzed_configs_give_config_error_or_config(text: str) -> None:
    """Whatever the file holds, loading gives a Config or a ConfigError naming where: never
    another exception (which would be a traceback and an exit code other than 78)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    try:
        cfg = parse_config(data, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")
        assert "$" in str(exc)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=8, deadline=None)
@given(toml_documents())
def test_fuzzed_configs_through_the_cli(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """The same through `edged config validate`: exit 0 or 78, one clear line, no traceback."""
    path = tmp_path_factory.mktemp("fuzz") / "edged.toml"
    path.write_text(text)
    res = run_edged("config", "validate", "-c", str(path))
    assert res.returncode in (0, 78), res.stderr
    assert "Traceback" not in res.stderr
    if res.returncode == 78:
        assert str(path) in res.stderr
