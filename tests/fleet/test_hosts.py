"""Three real Debian 12 hosts with systemd as PID 1 (tests/fleet/hosts.py), and edged installed
on one of them as the packaged systemd unit, reading a stream on the controller's Redis.

Skipped unless EDGED_FLEET_TESTS=1 (tests/fleet/conftest.py); needs root, debootstrap and
systemd-nspawn. The first run on a machine builds the cached tree (about a minute here).
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.hosts import Fleet, Host, build_wheelhouse
from tests.servers import Server, free_port
from tests.support import REPO, wait_for, write_config

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(900)]

UNIT_FILE = REPO / "systemd" / "edged.service"


@pytest.fixture(scope="module")
def controller_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A server on the controller that the hosts reach at their gateway address: bound to
    0.0.0.0, with a password (so protected mode lets remote clients in)."""
    password = secrets.token_hex(16)
    srv = Server(port=free_port(), data_dir=tmp_path_factory.mktemp("fleet-redis"),
                 extra=["--bind", "0.0.0.0", "--requirepass", password]).start()
    try:
        yield srv, password
    finally:
        srv.stop()


def test_hosts_boot_with_systemd(fleet: Fleet) -> None:
    assert len(fleet) == 3
    for host in fleet:
        state = host.system_state()
        assert state in ("running", "degraded"), f"{host.name}: {state}\n{host.journal()}"
        if state == "degraded":
            print(host.run(["systemctl", "--failed", "--no-legend"]).stdout)
        assert host.run(["readlink", "/proc/1/exe"]).stdout.strip().endswith("systemd")
        assert host.run(["hostname"]).stdout.strip() == host.name
    machine_ids = {h.run(["cat", "/etc/machine-id"]).stdout.strip() for h in fleet}
    assert len(machine_ids) == 3 and all(len(m) == 32 for m in machine_ids), machine_ids


def test_ssh_from_controller_with_test_key(fleet: Fleet) -> None:
    for host in fleet:
        proc = host.ssh("true")
        assert proc.returncode == 0, f"ssh to {host.name}: {proc.stderr}\n{host.journal('ssh')}"
        assert host.ssh("hostname").stdout.strip() == host.name


PING = """\
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"AUTH " + sys.argv[3].encode() + b"\\r\\nPING\\r\\n")
got = b""
while got.count(b"\\r\\n") < 2:
    got += s.recv(64) or b"!"
print(got.decode().replace("\\r\\n", " ").strip())
"""


def test_hosts_reach_controller_redis(fleet: Fleet, controller_redis: tuple[Server, str]) -> None:
    srv, password = controller_redis
    for host in fleet:
        proc = host.run(["python3", "-c", PING, host.gateway, str(srv.port), password])
        assert proc.stdout.strip() == "+OK +PONG", f"{host.name}: {proc.stdout}{proc.stderr}"


def unit_venv(unit_text: str) -> str:
    """The venv ExecStart= runs edged from (/opt/edged/venv or /opt/edged/current)."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            binary = shlex.split(line.split("=", 1)[1])[0].lstrip("-@+:!")
            assert binary.endswith("/bin/edged"), line
            return binary.removesuffix("/bin/edged")
    raise AssertionError(f"no ExecStart= in {UNIT_FILE}")


def show(host: Host, unit: str, *props: str) -> dict[str, str]:
    out = host.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)],
                   check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def install_edged(host: Host, wheelhouse: Path, url: str, password: str, stream: str) -> str:
    """edged as the README and the unit expect it: venv at ExecStart's path, the unit file,
    the config, the password file, the system user. The venv path."""
    unit_text = UNIT_FILE.read_text()
    venv = unit_venv(unit_text)
    host.copy_in(wheelhouse, "/root/wheelhouse")
    host.run(f"python3 -m venv {venv} && {venv}/bin/pip install -q --no-index "
             f"--find-links /root/wheelhouse edged", check=True, timeout=300)
    host.write_file("/etc/systemd/system/edged.service", unit_text, 0o644)
    cfg = write_config(
        Path(host.root.parent / "edged.toml"),  # a scratch copy next to the host's overlay
        [{"stream": stream, "handler": "edged.handlers:log", "start-id": "0"}],
        daemon={"listen": "127.0.0.1:9478", "shutdown-grace": "10s"},
        redis={"url": url, "password-file": "/run/credentials/edged.service/redis"},
    )
    host.write_file("/etc/edged/edged.toml", cfg.read_text(), 0o644)
    host.write_file("/etc/edged/redis.password", password + "\n", 0o600)
    host.run("id edged >/dev/null 2>&1 || useradd --system --no-create-home "
             "--shell /usr/sbin/nologin edged", check=True)
    host.run(["systemctl", "daemon-reload"], check=True)
    return venv


def test_edged_runs_as_systemd_unit(fleet: Fleet, controller_redis: tuple[Server, str],
                                    tmp_path: Path, fleet_timings: dict[str, float]) -> None:
    srv, password = controller_redis
    host = fleet[0]
    stream = f"fleet:{uuid.uuid4().hex[:8]}"
    r = srv.client(password=password)
    try:
        started = time.monotonic()
        assert fleet.tree is not None
        wheels = build_wheelhouse(fleet.tree, REPO, tmp_path / "wheelhouse")
        fleet_timings["wheelhouse (host python)"] = time.monotonic() - started
        print("wheelhouse:", " ".join(w.name for w in wheels))

        started = time.monotonic()
        url = f"redis://{host.gateway}:{srv.port}/0"
        venv = install_edged(host, tmp_path / "wheelhouse", url, password, stream)
        fleet_timings["install on host"] = time.monotonic() - started
        assert host.run([f"{venv}/bin/python", "-c", "import async_timeout"]).returncode == 0

        started = time.monotonic()
        host.run(["systemctl", "start", "edged"], check=True, timeout=90)  # Type=notify: READY
        fleet_timings["systemctl start (to READY)"] = time.monotonic() - started
        props = show(host, "edged", "ActiveState", "SubState", "StatusText", "MainPID")
        assert props["ActiveState"] == "active", props
        assert "reading 1 stream" in props["StatusText"], props

        added = r.xadd(stream, {"payload": json.dumps({"from": "controller"})})
        entry_id = added.decode() if isinstance(added, bytes) else str(added)

        def consumed() -> bool:
            groups = r.xinfo_groups(stream)
            return bool(groups) and groups[0]["pending"] == 0 \
                and groups[0]["last-delivered-id"].decode() == entry_id
        wait_for(consumed, 30, 0.1,
                 what=lambda: f"{entry_id} consumed: {r.xinfo_groups(stream)}\n"
                              f"{host.journal('edged')}")
        consumers = r.xinfo_consumers(stream, "edged")
        assert [c["name"].decode() for c in consumers] == [host.name], consumers
        wait_for(lambda: entry_id in host.journal("edged"), 10, 0.2,
                 what=lambda: f"the log handler's line for {entry_id}:\n{host.journal('edged')}")

        started = time.monotonic()
        host.run(["systemctl", "stop", "edged"], check=True, timeout=90)
        fleet_timings["systemctl stop (drain)"] = time.monotonic() - started
        props = show(host, "edged", "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
        assert props["ActiveState"] == "inactive", props
        assert props["Result"] == "success", props
        assert props["ExecMainStatus"] == "0", props
        assert r.xinfo_groups(stream)[0]["pending"] == 0

        security = host.run(["systemd-analyze", "security", "--no-pager", "edged.service"])
        print(security.stdout[-6000:])
        overall = [ln for ln in security.stdout.splitlines() if "Overall exposure" in ln]
        assert overall, security.stdout + security.stderr
        print(f"{host.name}: {overall[0].strip()}")
        print(host.journal("edged", lines=40))
    except BaseException:
        print(f"--- journal of edged on {host.name}:\n{host.journal('edged')}")
        print(f"--- status:\n{host.run(['systemctl', 'status', '--no-pager', 'edged']).stdout}")
        raise
    finally:
        r.close()
