"""The shipped alert rules and dashboard (docs/monitoring): promtool checks and unit-tests the
rules; every metric a rule or panel queries is one a real daemon exports; a real Prometheus
scrapes a real daemon and evaluates the rules against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Server, free_port
from tests.support import DaemonProcess, wait_for, write_config

MONITORING = Path(__file__).parent.parent / "docs" / "monitoring"
RULES = MONITORING / "edged.rules.yml"
DASHBOARD = MONITORING / "edged-dashboard.json"
METRIC = re.compile(r"\bedged_[a-z_]+")
# Prometheus suffixes of one exported family: a counter `x` is queried as `x_total`, a
# histogram as `x_bucket`, `x_count`, `x_sum`.
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("EDGED_REQUIRE_PROMTOOL"):
            pytest.fail(f"{name} is not installed (Debian: apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus)")
    return found


def _queried() -> set[str]:
    exprs = re.findall(r"expr: (?:>\s*\n)?((?:.+\n?)+?)(?=\s+(?:for|labels|annotations):)",
                       RULES.read_text())
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs += [t["expr"] for p in panels for t in p["targets"]]
    return {m for e in exprs for m in METRIC.findall(e)}


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = _tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([promtool, "test", "rules", "edged.rules.test.yml"], cwd=MONITORING,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def _exported(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


def _start_daemon(tmp_path: Path, url: str, stream: str,
                  spawned: list[DaemonProcess]) -> int:
    """A daemon with everything that has metrics: a stream with retention, an outbox."""
    port = free_port()
    cfg = write_config(tmp_path / "c.toml",
                       [{"stream": stream, "handler": "edged.handlers:log", "retention": "1h",
                         "trim-interval": "1s"}],
                       daemon={"consumer": "mon", "listen": f"127.0.0.1:{port}"},
                       outbox={"path": str(tmp_path / "outbox")})
    d = DaemonProcess(cfg, url, tmp_path / "d.log")
    spawned.append(d)
    d.wait_ready()
    return port


def test_every_metric_a_rule_or_panel_queries_is_exported(
        server: Server, stream: str, tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    port = _start_daemon(tmp_path, server.url, stream, spawned)

    def scrape() -> set[str] | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            names = _exported(reply.read().decode())
        return names if "edged_dead_letter_entries" in names else None  # sampled once

    exported = wait_for(scrape, 20, what="the group gauges sampled")
    queried = _queried()
    assert len(queried) >= 15, queried
    missing = {m for m in queried
               if m not in exported and not any(m.endswith(s) and m[: -len(s)] in exported
                                                for s in SUFFIXES)}
    assert not missing, f"queried but not exported: {sorted(missing)}"


def _query(prom: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        return list(json.loads(reply.read())["data"]["result"])


def test_a_real_prometheus_scrapes_a_daemon_and_evaluates_the_rules(
        server: Server, stream: str, tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    prometheus = _tool("prometheus")
    port = _start_daemon(tmp_path, server.url, stream, spawned)
    prom = free_port()
    shutil.copy(RULES, tmp_path / "edged.rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [edged.rules.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: edged\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))  # noqa: SIM115
    try:
        def scraped() -> bool:
            try:
                return [r["value"][1] for r in _query(prom, 'edged_ready{job="edged"}')] == ["1"]
            except OSError:
                return False

        wait_for(scraped, 60, what=lambda: "Prometheus scraped edged_ready 1: " +
                 (tmp_path / "prom.log").read_text()[-2000:])
        assert [r["value"][1] for r in _query(prom, 'up{job="edged"}')] == ["1"]

        def rules_evaluated() -> list[dict[str, Any]] | None:
            url = f"http://127.0.0.1:{prom}/api/v1/rules"
            with urllib.request.urlopen(url, timeout=10) as reply:
                rules = [r for g in json.loads(reply.read())["data"]["groups"]
                         for r in g["rules"]]
            done = rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
            return rules if done else None

        rules = wait_for(rules_evaluated, 30, what="the rules evaluated")
        assert len(rules) == 11 and all(r["health"] == "ok" for r in rules), rules
        firing = [r["name"] for r in rules if r["state"] != "inactive"]
        assert firing == [], f"a healthy daemon raised {firing}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
