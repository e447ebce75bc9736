"""The Ansible role on three real Debian 12 hosts (issue 10): install, rolling upgrade under
load, a broken version stopped by the health gate and rolled back, kill -9 of a daemon, and
idempotence.

Redis on the controller: a primary, a replica and three sentinels bound to 0.0.0.0 and
announced at the first host's gateway address (10.77.N.1), which every host reaches through its
default route; the data servers have a password (the sentinels none: the role has no sentinel
password yet). edged on the hosts finds the primary through the sentinels.

Three versions, each a real wheelhouse built by ``build_wheelhouse`` from a copy of this
project with its version changed: A and B work; C starts (READY=1, systemd counts it
active) but its status never says ready, so `edged check` keeps failing: the health gate, not
the restart, stops the rollout (its ``config validate`` still passes). The handler is
``fleetprobe:record``, a one-module package
written here as a wheel and put into every wheelhouse: it counts each run of an entry in the
hash ``fleet:runs`` and logs ``<host> <id>`` to the list ``fleet:log`` on the controller's
primary, so "handled at least once" and "handled twice" are counted, not guessed.

Skipped unless EDGED_FLEET_TESTS=1 (tests/fleet/conftest.py); needs root and PyPI (the
wheelhouses). Figures are printed at the end (``-s`` shows them).
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.fleet.hosts import Fleet, Host, build_wheelhouse
from tests.sentinel_cluster import SentinelProcess, _pairs
from tests.servers import Server, free_port
from tests.support import REPO, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(1200)]

ANSIBLE_DIR = REPO / "ansible"
SERVICE = "edge-fleet"
STREAM = "edge:fleet"
GROUP = "edged"
VERSIONS = {"A": "0.1.90", "B": "0.1.91", "C": "0.1.92"}  # C: cannot become ready
PROBE_VERSION = "1.0"
PROBE_SOURCE = '''\
"""Records every handler run on the controller's Redis (the fleet rollout test)."""
import os
import socket
import threading
import time

import redis

HOST = socket.gethostname()
_clients = {}
_lock = threading.Lock()


def _client(addr):
    with _lock:
        client = _clients.get(addr)
        if client is None:
            path = os.path.join(os.environ["CREDENTIALS_DIRECTORY"], "redis")
            with open(path) as f:
                password = f.read().strip()
            host, port = addr.rsplit(":", 1)
            client = _clients[addr] = redis.Redis(host=host, port=int(port), password=password,
                                                  socket_timeout=5, socket_connect_timeout=5)
        return client


def record(event):
    body = event.payload or {}
    client = _client(body["report"])
    time.sleep(float(body.get("sleep", 0)))
    pipe = client.pipeline(transaction=False)
    pipe.hincrby("fleet:runs", event.id, 1)
    pipe.rpush("fleet:log", HOST + " " + event.id)
    pipe.execute()
'''
BROKEN_STATUS_AT = "    not_alive = [f\"{row.name}: no read completed"
BROKEN_STATUS = '    not_ready.append("fleet test, version C: never ready")\n'


# --------------------------------------------------------------------------- Redis


@dataclass
class Redis:
    """Primary, replica and three sentinels on the controller, reachable from the hosts."""

    host: str  # the controller address every host reaches
    password: str
    primary: Server
    replica: Server
    sentinels: list[SentinelProcess] = field(default_factory=list)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.primary.port, password=self.password, socket_timeout=10,
                           decode_responses=True)

    @property
    def report(self) -> str:
        return f"{self.host}:{self.primary.port}"

    def sentinel_hosts(self) -> list[str]:
        return [f"{self.host}:{s.port}" for s in self.sentinels]


def _sentinels_settled(rd: Redis) -> bool:
    """Every sentinel names the primary, sees it up, knows the two others and the replica."""
    for s in rd.sentinels:
        try:
            with s.client() as c:
                addr = c.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
                info = c.execute_command("SENTINEL", "MASTER", SERVICE)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False
        view = _pairs(info)
        if [str(a) for a in addr or []] != [rd.host, str(rd.primary.port)]:
            return False
        if view.get("flags") != "master" or view.get("num-other-sentinels") != "2" \
                or view.get("num-slaves") != "1":
            return False
    return True


@pytest.fixture(scope="module")
def redis_ha(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    base = tmp_path_factory.mktemp("fleet-redis-ha")
    host = fleet[0].gateway
    password = secrets.token_hex(16)
    common = ["--requirepass", password, "--masterauth", password,
              "--repl-diskless-sync-delay", "0"]
    started: list[Any] = []
    try:
        primary = Server(port=free_port(), data_dir=base / "primary", bind="0.0.0.0",
                         extra=[*common, "--replica-announce-ip", host]).start()
        started.append(primary)
        replica = Server(port=free_port(), data_dir=base / "replica", bind="0.0.0.0",
                         extra=[*common, "--replica-announce-ip", host,
                                "--replicaof", host, str(primary.port)]).start()
        started.append(replica)
        rd = Redis(host=host, password=password, primary=primary, replica=replica)
        with rd.client() as c:
            wait_for(lambda: c.info("replication").get("connected_slaves") == 1, 30, 0.05,
                     what="the replica attached to the primary")
        for i in range(3):
            s = SentinelProcess(
                port=free_port(), data_dir=base / f"sentinel-{i}", service=SERVICE,
                monitor_port=primary.port, bind="0.0.0.0", monitor_host=host,
                conf_extra=[f"sentinel auth-pass {SERVICE} {password}", "protected-mode no",
                            f"sentinel announce-ip {host}"])
            started.append(s)
            rd.sentinels.append(s)
            s.start()
        wait_for(lambda: _sentinels_settled(rd), 40, 0.1, what="sentinels agreeing on all")
        yield rd
    finally:
        for proc in reversed(started):
            proc.stop()


# --------------------------------------------------------------------------- wheelhouses


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def write_probe_wheel(out_dir: Path) -> Path:
    """fleetprobe-1.0-py3-none-any.whl, written directly (pure Python, no build backend)."""
    dist = f"fleetprobe-{PROBE_VERSION}.dist-info"
    files = {
        "fleetprobe/__init__.py": PROBE_SOURCE.encode(),
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: fleetprobe\nVersion: {PROBE_VERSION}\n"
                             "Summary: edged fleet test handler\n").encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: edged-fleet-test\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)}\n" for name, data in files.items())
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    wheel = out_dir / f"fleetprobe-{PROBE_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def project_copy(dest: Path, version: str, broken: bool) -> Path:
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", "tests",
        "bench", "docs", "ansible"))
    pyproject = dest / "pyproject.toml"
    text, n = re.subn(r'(?m)^version = "[^"]+"$', f'version = "{version}"', pyproject.read_text(),
                      count=1)
    assert n == 1, "no version line in pyproject.toml"
    pyproject.write_text(text)
    init = dest / "edged" / "__init__.py"
    init.write_text(re.sub(r'(?m)^__version__ = "[^"]+"$', f'__version__ = "{version}"',
                           init.read_text()))
    if broken:
        status = dest / "edged" / "daemon" / "status.py"
        text = status.read_text()
        assert BROKEN_STATUS_AT in text, "status.snapshot moved: adjust the broken version's patch"
        status.write_text(text.replace(BROKEN_STATUS_AT, BROKEN_STATUS + BROKEN_STATUS_AT, 1))
    return dest


@pytest.fixture(scope="module")
def wheelhouses(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory,
                fleet_timings: dict[str, float]) -> dict[str, Path]:
    """version -> its wheelhouse directory (edged, its dependencies, fleetprobe)."""
    base = tmp_path_factory.mktemp("fleet-wheelhouses")
    assert fleet.tree is not None
    started = time.monotonic()

    def build(label: str) -> tuple[str, Path]:
        version = VERSIONS[label]
        src = project_copy(base / f"src-{version}", version, broken=label == "C")
        out = base / version
        build_wheelhouse(fleet.tree, src, out)  # type: ignore[arg-type]
        write_probe_wheel(out)
        assert (out / f"edged-{version}-py3-none-any.whl").is_file(), sorted(out.iterdir())
        return version, out

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        built = dict(pool.map(build, VERSIONS))
    fleet_timings["3 wheelhouses (parallel)"] = time.monotonic() - started
    return built


# --------------------------------------------------------------------------- Ansible


class Ansible:
    """ansible-playbook from the controller against the fleet, with a generated inventory."""

    def __init__(self, fleet: Fleet, rd: Redis, work: Path) -> None:
        self.fleet = fleet
        self.work = work
        inv = work / "inventory"
        (inv / "group_vars" / "edged").mkdir(parents=True)
        vault_pass = work / "vault-pass"
        vault_pass.write_text(secrets.token_hex(16) + "\n")
        vault_pass.chmod(0o600)
        self.env = {
            **os.environ,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_VAULT_PASSWORD_FILE": str(vault_pass),
            "ANSIBLE_LOCAL_TEMP": str(work / "local-tmp"),
            "ANSIBLE_REMOTE_TMP": "/root/.ansible/tmp-edged-fleet",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_FORKS": "5",
            # Short (a socket path has at most 107 bytes); its masters are ended by close().
            "ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(prefix="afl-", dir="/tmp"),
            "ANSIBLE_CONFIG": str(work / "ansible.cfg"),  # none: only what is set here
        }
        (work / "ansible.cfg").write_text("[defaults]\n")
        bindir = Path(sys.executable).parent
        self.playbook = str(bindir / "ansible-playbook")
        encrypted = subprocess.run(
            [str(bindir / "ansible-vault"), "encrypt_string", "--name", "edged_redis_password",
             "--", rd.password],
            env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout
        (inv / "group_vars" / "edged" / "vault.yml").write_text("---\n" + encrypted)
        hosts = {
            h.name: {
                "ansible_host": h.address,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(fleet.key),
                "ansible_ssh_common_args":
                    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                    "-o LogLevel=ERROR",
                "ansible_python_interpreter": "/usr/bin/python3",
            } for h in fleet
        }
        group_vars = {
            "edged_handler_packages": [f"fleetprobe=={PROBE_VERSION}"],
            "edged_redis_sentinel": {"hosts": rd.sentinel_hosts(), "service": SERVICE},
            "edged_redis_options": {"connect-timeout": "5s"},
            "edged_daemon": {"consumer": "{hostname}", "listen": "127.0.0.1:9478",
                             "shutdown-grace": "10s"},
            "edged_streams": [{"stream": STREAM, "handler": "fleetprobe:record",
                               "start-id": "0", "concurrency": 8}],
            "edged_health_retries": 30,
            "edged_health_delay": 1,
            "edged_restart_timeout": 90,
        }
        (inv / "hosts.yml").write_text(yaml.safe_dump(
            {"edged": {"hosts": hosts, "vars": group_vars}}, sort_keys=False))
        self.inventory = inv / "hosts.yml"
        self.log = work / "ansible.log"

    def play(self, playbook: str, version: str, wheelhouse: Path | None, *extra: str,
             timeout: float = 600) -> tuple[int, str, float]:
        """Run one playbook; its exit code, output and duration (the output is also logged)."""
        argv = [self.playbook, "-i", str(self.inventory), playbook,
                "-e", f"edged_version={version}", *extra]
        if wheelhouse is not None:
            argv += ["-e", f"edged_wheelhouse_dir={wheelhouse}"]
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=ANSIBLE_DIR, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        took = time.monotonic() - started
        out = proc.stdout + proc.stderr
        with self.log.open("a") as f:
            f.write(f"\n===== {' '.join(argv)} -> {proc.returncode} in {took:.1f}s\n{out}")
        return proc.returncode, out, took

    def close(self) -> None:
        """End the ssh ControlPersist masters ansible left (through their control sockets,
        which is how ssh stops its own master) and remove their directory."""
        control_dir = Path(self.env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
        for sock in control_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "edged-fleet"],
                           capture_output=True, timeout=30, check=False)
        shutil.rmtree(control_dir, ignore_errors=True)

    def diagnose(self, out: str, hosts: list[Host] | None = None) -> str:
        parts = [f"--- ansible output:\n{out[-12000:]}"]
        for h in hosts or list(self.fleet):
            parts.append(f"--- journalctl -u edged on {h.name}:\n{h.journal('edged', lines=60)}")
        return "\n".join(parts)


def recap(out: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, unreachable, failed, ...}."""
    found: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in out.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap and ":" in line:
            name, _, rest = line.partition(":")
            counts = dict(re.findall(r"(\w+)=(\d+)", rest))
            if counts:
                found[name.strip()] = {k: int(v) for k, v in counts.items()}
    return found


# --------------------------------------------------------------------------- observing hosts


def show(host: Host, *props: str) -> dict[str, str]:
    out = host.run(["systemctl", "show", "edged", *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def installed_version(host: Host) -> str:
    proc = host.run(["/opt/edged/current/bin/python", "-c",
                     "import importlib.metadata as m, edged; "
                     "print(m.version('edged'), edged.__version__)"])
    return proc.stdout.strip()


def failed_task(out: str, host: str) -> str:
    """The name of the task during which ``host`` failed, from ansible-playbook's output."""
    task = ""
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK ["):].split("]", 1)[0]
        elif line.startswith(f"fatal: [{host}]"):
            return task
    return ""


def ready(host: Host) -> bool:
    props = show(host, "ActiveState", "StatusText")
    return props.get("ActiveState") == "active" and props.get("StatusText", "").startswith("reading")


class DownPoller:
    """`systemctl is-active edged` on every host every ~0.2 s; the most not active at once."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.max_down = 0
        self.samples = 0
        self.down_seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            down = []
            for h in self.fleet:
                state = h.run(["systemctl", "is-active", "edged"], timeout=10).stdout.strip()
                if state != "active":
                    down.append(h.name)
            self.down_seen.update(down)
            self.max_down = max(self.max_down, len(down))
            self.samples += 1
            self._stop.wait(0.2)

    def __enter__(self) -> DownPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Producer:
    """XADD to the stream continuously (every ~20 ms) from a thread; the ids it published."""

    def __init__(self, rd: Redis, sleep: float = 0.05, interval: float = 0.02) -> None:
        self.rd = rd
        self.body = {"report": rd.report, "sleep": sleep}
        self.interval = interval
        self.ids: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.rd.client() as c:
            n = 0
            while not self._stop.is_set():
                try:
                    self.ids.append(c.xadd(STREAM, {"payload": json.dumps({**self.body, "n": n})}))
                    n += 1
                except redis.RedisError as exc:  # counted; the test asserts none
                    self.errors.append(repr(exc))
                self._stop.wait(self.interval)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def publish(rd: Redis, count: int, sleep: float = 0.0) -> list[str]:
    with rd.client() as c:
        return [c.xadd(STREAM, {"payload": json.dumps({"report": rd.report, "sleep": sleep,
                                                       "n": i})}) for i in range(count)]


def pending(rd: Redis) -> int:
    with rd.client() as c:
        return int(c.xpending(STREAM, GROUP)["pending"])


def runs(rd: Redis, ids: list[str]) -> list[int]:
    with rd.client() as c:
        return [int(v or 0) for v in c.hmget("fleet:runs", ids)] if ids else []


def wait_handled(rd: Redis, ids: list[str], timeout: float, diag: Any) -> list[int]:
    """Every id handled at least once and nothing pending in the group; the run counts."""
    def done() -> tuple[list[int]] | None:
        counts = runs(rd, ids)
        return (counts,) if all(counts) and pending(rd) == 0 else None

    def what() -> str:
        counts = runs(rd, ids)
        return (f"{counts.count(0)} of {len(ids)} entries not handled, {pending(rd)} pending\n"
                f"{diag()}")
    return wait_for(done, timeout, 0.2, what=what)[0]


def handled_by(rd: Redis, since: int = 0) -> dict[str, int]:
    with rd.client() as c:
        lines = c.lrange("fleet:log", since, -1)
    by: dict[str, int] = {}
    for line in lines:
        by[line.split()[0]] = by.get(line.split()[0], 0) + 1
    return by


def log_len(rd: Redis) -> int:
    with rd.client() as c:
        return int(c.llen("fleet:log"))


def wait_consumes(rd: Redis, hosts: list[Host], timeout: float, diag: Any) -> None:
    """Publish a few entries at a time until each of ``hosts`` has handled one of them."""
    start = log_len(rd)

    def all_consumed() -> bool:
        by = handled_by(rd, start)
        if all(by.get(h.name) for h in hosts):
            return True
        publish(rd, 6, sleep=0.05)
        return False

    wait_for(all_consumed, timeout, 0.3,
             what=lambda: f"each of {[h.name for h in hosts]} handling an entry: "
                          f"{handled_by(rd, start)}\n{diag()}")


# --------------------------------------------------------------------------- the scenario


def test_rollout_scenario(fleet: Fleet, redis_ha: Redis, wheelhouses: dict[str, Path],
                          tmp_path: Path, fleet_timings: dict[str, float]) -> None:
    rd = redis_ha
    a, b, c = (VERSIONS[k] for k in "ABC")
    ans = Ansible(fleet, rd, tmp_path)
    figures: dict[str, Any] = {}
    hosts = list(fleet)
    last_out = ""

    def diag() -> str:
        return ans.diagnose(last_out)

    try:
        # (0) check mode on fresh hosts (a dry run before the first install): it passes and
        # changes nothing.
        rc, last_out, took = ans.play("site.yml", a, wheelhouses[a], "--check")
        assert rc == 0, f"site.yml --check ({a}) exited with {rc}\n{diag()}"
        figures["site.yml --check on fresh hosts"] = f"{took:.1f}s"
        for h in hosts:
            left = h.run("ls -A /opt/edged /etc/edged /etc/systemd/system/edged.service "
                         "/var/cache/edged 2>/dev/null; getent passwd edged").stdout
            assert not left.strip(), f"{h.name}: check mode left {left}"

        # (1) install A everywhere, from the wheelhouse, offline.
        rc, last_out, took = ans.play("site.yml", a, wheelhouses[a])
        assert rc == 0, f"site.yml ({a}) exited with {rc}\n{diag()}"
        figures["install of 3 hosts (site.yml)"] = f"{took:.1f}s"
        for h in hosts:
            assert ready(h), f"{h.name}: {show(h, 'ActiveState', 'StatusText')}\n{diag()}"
            assert installed_version(h) == f"{a} {a}", (h.name, installed_version(h))
            assert h.run(["readlink", "/opt/edged/current"]).stdout.strip() == f"/opt/edged/{a}"
        wait_consumes(rd, hosts, 60, diag)
        wait_handled(rd, [], 30, diag)

        # (2) rolling upgrade to B under continuous load.
        invocations = {h.name: show(h, "InvocationID")["InvocationID"] for h in hosts}
        with DownPoller(fleet) as poller, Producer(rd) as producer:
            wait_for(lambda: len(producer.ids) >= 20, 10, 0.05, what="the producer started")
            rc, last_out, took = ans.play("rollout.yml", b, wheelhouses[b])
            assert rc == 0, f"rollout.yml ({b}) exited with {rc}\n{diag()}"
            wait_for(lambda: poller.samples >= 3, 10, 0.1, what="three more polls")
        assert not producer.errors, producer.errors[:5]
        figures["rolling upgrade of 3 hosts (rollout.yml)"] = f"{took:.1f}s"
        figures["most hosts down at once (upgrade)"] = poller.max_down
        figures["hosts seen down (upgrade)"] = sorted(poller.down_seen)
        figures["entries published during the upgrade"] = len(producer.ids)
        counts = wait_handled(rd, producer.ids, 90, diag)
        figures["entries handled twice or more (upgrade)"] = sum(1 for n in counts if n > 1)
        assert poller.max_down <= 1, f"{poller.max_down} hosts down at once"
        for h in hosts:
            assert show(h, "InvocationID")["InvocationID"] != invocations[h.name], \
                f"{h.name} was not restarted"
            assert ready(h), f"{h.name}: {show(h, 'ActiveState', 'StatusText')}\n{diag()}"
            assert installed_version(h) == f"{b} {b}", (h.name, installed_version(h))
            assert h.run(["readlink", "/opt/edged/previous"]).stdout.strip() == f"/opt/edged/{a}"

        # (3) a broken C: the first host fails, the play stops, the others keep B.
        rc, last_out, took = ans.play("rollout.yml", c, wheelhouses[c])
        figures["failed rollout of C"] = f"rc {rc} in {took:.1f}s"
        assert rc != 0, f"rollout of the broken {c} passed\n{diag()}"
        rec = recap(last_out)
        failed = [name for name, counts in rec.items() if counts.get("failed")]
        first = hosts[0]
        assert failed == [first.name], f"failed hosts {failed}, recap {rec}\n{diag()}"
        assert first.run(["readlink", "/opt/edged/current"]).stdout.strip() == f"/opt/edged/{c}"
        for h in hosts[1:]:
            assert ready(h), f"{h.name}: {show(h, 'ActiveState', 'StatusText')}\n{diag()}"
            assert installed_version(h) == f"{b} {b}", (h.name, installed_version(h))
        # Running (systemd has it active) but never ready: the health gate is what failed.
        gate = first.run(["/opt/edged/current/bin/edged", "check", "-c", "/etc/edged/edged.toml"])
        assert gate.returncode == 1 and "never ready" in gate.stdout + gate.stderr, gate
        assert failed_task(last_out, first.name).startswith("edged : Wait until edged is ready"), \
            last_out[-3000:]
        ids = publish(rd, 30, sleep=0.02)
        wait_for(lambda: all(runs(rd, ids)), 30, 0.2,
                 what=lambda: f"B hosts handling while {first.name} is broken\n{diag()}")
        wait_consumes(rd, hosts[1:], 30, diag)
        rc, last_out, took = ans.play("rollback.yml", b, None, "--limit", first.name)
        assert rc == 0, f"rollback.yml exited with {rc}\n{diag()}"
        figures["rollback of 1 host"] = f"{took:.1f}s"
        assert first.run(["readlink", "/opt/edged/current"]).stdout.strip() == f"/opt/edged/{b}"
        assert installed_version(first) == f"{b} {b}"
        assert ready(first), show(first, "ActiveState", "StatusText")
        wait_consumes(rd, [first], 60, diag)
        wait_handled(rd, ids, 30, diag)

        # (4) kill -9 of one daemon under load: systemd restarts it, its entries are finished.
        victim = hosts[1]
        with Producer(rd, sleep=0.2) as producer:
            wait_for(lambda: len(pending_ids(rd, victim.name)) >= 2, 30, 0.05,
                     what=lambda: f"entries pending on {victim.name}")
            before = show(victim, "MainPID", "NRestarts")
            victim.run(["kill", "-9", before["MainPID"]], check=True)
            held = pending_ids(rd, victim.name)  # after the kill: none can be acked now
            wait_for(lambda: show(victim, "NRestarts")["NRestarts"] != before["NRestarts"]
                     and ready(victim), 60, 0.2,
                     what=lambda: f"{victim.name} restarted: {show(victim, 'NRestarts')}\n"
                                  f"{victim.journal('edged', lines=40)}")
            after = show(victim, "MainPID", "NRestarts")
            assert after["MainPID"] != before["MainPID"]
        figures["kill -9: entries pending on the victim"] = len(held)
        assert held and set(held) <= set(producer.ids), held
        wait_handled(rd, producer.ids, 60, diag)
        assert pending(rd) == 0
        with rd.client() as cl:
            finished_by = {line.split()[0] for line in cl.lrange("fleet:log", 0, -1)
                           if line.split()[1] in set(held)}
        figures["kill -9: its entries finished by"] = sorted(finished_by)

        # (5) idempotence: the same version again changes nothing on any host.
        for playbook in ("site.yml", "rollout.yml"):
            rc, last_out, took = ans.play(playbook, b, wheelhouses[b])
            assert rc == 0, f"{playbook} ({b}) again exited with {rc}\n{diag()}"
            rec = recap(last_out)
            assert set(rec) == {h.name for h in hosts}, rec
            changed = {name: counts["changed"] for name, counts in rec.items()}
            assert all(v == 0 for v in changed.values()), \
                f"{playbook} again changed {changed}\n{last_out[-8000:]}"
            figures[f"{playbook} again (idempotent)"] = f"{took:.1f}s, changed=0"

        security = hosts[0].run(["systemd-analyze", "security", "--no-pager", "edged.service"])
        overall = [ln.strip() for ln in security.stdout.splitlines() if "Overall exposure" in ln]
        assert overall, security.stdout + security.stderr
        figures["systemd-analyze security edged"] = overall[0]

        # The password: never in Ansible's output nor in a host's journal; on disk only in the
        # root-only file the unit loads as a credential.
        assert rd.password not in ans.log.read_text(), "the Redis password is in ansible output"
        for h in hosts:
            assert rd.password not in h.journal("edged", lines=100000), h.name
            stat = h.run(["stat", "-c", "%U %a", "/etc/edged/redis.password"], check=True)
            assert stat.stdout.split() == ["root", "600"], (h.name, stat.stdout)
            assert rd.password not in h.run(["cat", "/etc/edged/edged.toml"]).stdout, h.name
    except BaseException:
        print(f"--- full ansible log: {ans.log}")
        print(diag())
        raise
    finally:
        ans.close()
        print("\nrollout figures:")
        for k, v in figures.items():
            print(f"  {k}: {v}")
        for k, v in figures.items():
            if isinstance(v, (int, float)):
                continue
            m = re.match(r"([\d.]+)s", str(v))
            if m:
                fleet_timings[k] = float(m.group(1))


def pending_ids(rd: Redis, consumer: str) -> list[str]:
    with rd.client() as c:
        rows = c.xpending_range(STREAM, GROUP, "-", "+", 1000, consumername=consumer)
    return [row["message_id"] for row in rows]
