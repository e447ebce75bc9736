"""Config decoding: good files load, every bad file is refused with its path, never a traceback."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.config import MAX_CLAIM_IDLE, Config, load_config, parse_config
from edged.durations import Duration
from edged.errors import ConfigError
from edged.scripts import RELEASE_IDLE_MS
from tests.support import run_edged, write_config

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
    good.write_text(GOOD)
    ok = run_edged("config", "validate", "-c", str(good))
    assert ok.returncode == 0, ok.stderr
    bad = write_config(tmp_path / "bad.toml", [{"stream": "s", "handler": "no.such.module:fn"}])
    res = run_edged("config", "validate", "-c", str(bad))
    assert res.returncode == 78
    assert "$.streams[0].handler" in res.stderr and "no.such.module" in res.stderr
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
