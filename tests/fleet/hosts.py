"""Debian 12 test hosts with real systemd as PID 1, for rollout tests (issue 10).

One `debootstrap --variant=minbase` tree is built once per machine and cached under
``/var/cache/edged-fleet/<key>/tree`` (``$EDGED_FLEET_CACHE`` moves it); the key hashes the
suite, mirror, package list and the preparation below, so changing any of them builds a new
tree. A build goes to ``build-<pid>-<random>/`` and is renamed into place only when complete:
a killed build never leaves a half tree that a later run would boot.

Each host is an overlay (lower: the cached tree; upper: a per-run temp dir) booted with
``systemd-nspawn --boot --register=no --keep-unit`` in its own network namespace
``edged-fleet-<N>``, joined to the controller by a veth pair: ``10.77.N.1/24`` on the
controller side (``edfl<N>``), ``10.77.N.2/24`` inside (``host0``, default route via
``10.77.N.1``). A server the tests start on the controller bound to 0.0.0.0 (or to
``Host.gateway``) is reachable from the host; the host's sshd is at ``Host.address:22``.

``--keep-unit`` makes nspawn use the cgroup it was started in. Without systemd on the
controller (a plain VM or container) each nspawn is first moved into its own cgroup
(``edged-fleet-<run>/<host>`` under the cgroup2 and name=systemd hierarchies), so that the
three containers' systemd instances never share one; with systemd as the controller's PID 1,
nspawn runs inside ``systemd-run --scope`` instead.

Every resource a run creates (processes, mounts, netns, cgroups, temp dirs) is recorded in
``/run/edged-fleet/run-<pid>.json``; ``Fleet.close()`` removes them (also when a test failed),
and the next ``Fleet.start()`` removes what a SIGKILLed run left behind. Processes are ended
by their pid only.

Everything here needs root (debootstrap, nspawn, mount, ip netns); the tests skip unless
``EDGED_FLEET_TESTS=1``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import process_gone, wait_for

SUITE = "bookworm"
MIRROR = os.environ.get("EDGED_FLEET_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "openssh-server", "iproute2",
    "ca-certificates",
    # What Ansible's modules import on the host (the role's apt and pip tasks): the hosts are
    # offline, so the apt module could not install python3-apt itself.
    "python3-apt", "python3-packaging",
)
# Bump when prepare_tree() changes: the cache key changes with it and a new tree is built.
PREPARE_VERSION = 1
CACHE_ROOT = Path(os.environ.get("EDGED_FLEET_CACHE", "/var/cache/edged-fleet"))
STATE_DIR = Path("/run/edged-fleet")
SUBNET_PREFIX = "10.77"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_FILE = ".edged-fleet-ready"
# Units a minimal test host does not need: consoles nobody reads, timers that would start apt.
MASKED_UNITS = (
    "console-getty.service", "container-getty@.service", "getty@.service",
    "serial-getty@.service", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "dpkg-db-backup.timer", "systemd-tmpfiles-clean.timer",
)
SSHD_DROPIN = """\
# edged fleet test host: root by key only.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def log(msg: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*args: str | os.PathLike[str], check: bool = True, timeout: float = 120,
       **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command on the controller; on failure the error shows its output."""
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def missing_tools() -> list[str]:
    """The controller-side programs this module needs that are not installed."""
    tools = ["debootstrap", "systemd-nspawn", "ip", "nsenter", "ssh", "ssh-keygen", "mount"]
    return [t for t in tools if shutil.which(t) is None]


# --------------------------------------------------------------------------- the cached tree


def tree_key() -> str:
    spec = json.dumps([SUITE, MIRROR, "minbase", sorted(PACKAGES), PREPARE_VERSION])
    return f"{SUITE}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[int]:
    """Hold an exclusive lock on ``path``; yields its fd (children given it hold it too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f.fileno()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path.resolve()) if path.exists() else str(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Unmount whatever is mounted below ``path`` (a killed debootstrap leaves /proc and /sys
    there), then delete it without ever crossing into another file system."""
    if not path.exists() and not path.is_symlink():
        return
    for point in _mounts_under(path):
        if sh("umount", point, check=False).returncode != 0:
            sh("umount", "-l", point, check=False)
    sh("rm", "-rf", "--one-file-system", path, timeout=300)


def ensure_tree(cache_root: Path = CACHE_ROOT) -> Path:
    """The prepared root tree, built on first use (minutes) and cached afterwards."""
    final = cache_root / tree_key()
    tree = final / "tree"
    if (tree / READY_FILE).exists():
        return tree
    with _flock(cache_root / ".lock") as lock_fd:
        if (tree / READY_FILE).exists():
            return tree
        # Holding the lock, any build dir is a leftover of a killed build.
        for stale in cache_root.glob("build-*"):
            log(f"removing unfinished build {stale}")
            remove_tree(stale)
        if final.exists():  # renamed into place but without its marker: not ours to trust
            remove_tree(final)
        build = cache_root / f"build-{os.getpid()}-{secrets.token_hex(4)}"
        build.mkdir(parents=True)
        started = time.monotonic()
        log(f"debootstrap {SUITE} into {build} (first run on this machine: a few minutes)")
        # debootstrap inherits the lock: if this process is killed, the next run waits for
        # the orphaned debootstrap to end before it removes the unfinished build.
        sh("debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
           build / "tree", MIRROR, timeout=1800, pass_fds=(lock_fd,))
        prepare_tree(build / "tree")
        (build / "tree" / READY_FILE).write_text(f"{tree_key()}\n")
        os.rename(build, final)
        log(f"tree built in {time.monotonic() - started:.1f}s: {tree}")
    return tree


def prepare_tree(root: Path) -> None:
    """What every host shares: empty machine-id (each boot makes one), sshd enabled with root
    login by key only and no host keys (each host gets its own), no gettys, no apt timers."""
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dbus_id.unlink()
    dbus_id.symlink_to("/etc/machine-id")
    system = root / "etc/systemd/system"
    for wants in system.glob("getty.target.wants/*"):
        wants.unlink()
    for unit in MASKED_UNITS:
        link = system / unit
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to("/dev/null")
    ssh_unit = system / "multi-user.target.wants/ssh.service"
    if not ssh_unit.is_symlink():  # (an absolute link: exists() would look on the controller)
        ssh_unit.parent.mkdir(parents=True, exist_ok=True)
        ssh_unit.symlink_to("/lib/systemd/system/ssh.service")
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/edged-fleet.conf").write_text(SSHD_DROPIN)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


# --------------------------------------------------------------------------- run state


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return None


@dataclass
class RunState:
    """What one controller process created, on disk so a later run can undo a killed one."""

    path: Path
    owner: int = field(default_factory=os.getpid)
    owner_start: str | None = None
    pids: list[list[Any]] = field(default_factory=list)  # [pid, start time]
    mounts: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def save(self) -> None:
        if self.owner_start is None:
            self.owner_start = _start_time(self.owner)
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def add(self, kind: str, value: Any) -> None:
        if kind == "pids":
            value = [value, _start_time(value)]
        if value not in getattr(self, kind):
            getattr(self, kind).append(value)
            self.save()

    @classmethod
    def load(cls, path: Path) -> RunState:
        return cls(path=path, **json.loads(path.read_text()))

    def owner_alive(self) -> bool:
        return _start_time(self.owner) is not None and _start_time(self.owner) == self.owner_start

    def undo(self) -> list[str]:
        """Remove everything recorded, each step independent of the others; the errors."""
        errors: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                errors.append(f"{what}: {exc}")

        for pid, started in reversed(self.pids):
            if _start_time(pid) == started:  # not a later process that got the same pid
                attempt(f"kill {pid}", _kill_pid, pid)
        for point in reversed(self.mounts):
            attempt(f"umount {point}", _umount, point)
        for ns in self.netns:
            attempt(f"netns {ns}", _del_netns, ns)
        for link in self.links:
            attempt(f"link {link}", _del_link, link)
        for cg in self.cgroups:
            attempt(f"cgroup {cg}", _remove_cgroup, Path(cg))
        for d in reversed(self.dirs):
            attempt(f"dir {d}", remove_tree, Path(d))
        if not errors:
            self.path.unlink(missing_ok=True)
        return errors


def _kill_pid(pid: int) -> None:
    """SIGKILL a process we started (it may already be gone), then wait for it to go."""
    if process_gone(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_gone(pid), 10, 0.05, what=f"pid {pid} to end")


def _umount(point: str) -> None:
    if point in _mounts_under(Path(point)) and sh("umount", point, check=False).returncode:
        sh("umount", "-l", point)


def _del_netns(name: str) -> None:
    if Path(f"/run/netns/{name}").exists():
        sh("ip", "netns", "del", name)


def _del_link(name: str) -> None:
    """Usually gone already: deleting the netns deletes the veth pair (asynchronously)."""
    if not Path(f"/sys/class/net/{name}").exists():
        return
    proc = sh("ip", "link", "del", name, check=False)
    if proc.returncode != 0 and Path(f"/sys/class/net/{name}").exists():
        raise RuntimeError(f"ip link del {name}: {proc.stderr.strip()}")


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup and the (empty) ones the container's systemd made below it."""
    if not path.exists():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True):
        sub.rmdir()
    path.rmdir()


def sweep_stale_runs() -> None:
    """Undo what runs killed before their clean-up (their owner pid is gone) left behind."""
    if not STATE_DIR.exists():
        return
    for path in STATE_DIR.glob("run-*.json"):
        try:
            state = RunState.load(path)
        except (OSError, ValueError, TypeError):
            continue
        if state.owner_alive():
            continue
        log(f"removing what a dead run (pid {state.owner}) left: {path}")
        for err in state.undo():
            log(f"  could not undo {err}")


# --------------------------------------------------------------------------- cgroups


def _cgroup_roots() -> list[Path]:
    """Where to make each container's own cgroup: the cgroup2 hierarchy and the v1
    name=systemd one (both exist on a hybrid host; a pure v2 host has only the first)."""
    roots = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, point, fstype, opts = line.split()[:4]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
            roots.append(Path(point))
    return roots


def host_has_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


# --------------------------------------------------------------------------- hosts


def _nspawn_child(nspawn_pid: int) -> int | None:
    """The container's PID 1 (systemd), seen from the controller: nspawn's child that is
    pid 1 of its own pid namespace."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                return int(child)
    return None


@dataclass
class Host:
    """One booted container. ``run`` executes inside it through nsenter; ``ssh_args`` is the
    ssh command line (test key, no host key checks) for what must go over the network."""

    name: str
    index: int  # N of 10.77.N.0/24
    root: Path  # the merged overlay: the host's / seen from the controller
    netns: str
    key: Path
    console_log: Path
    proc: subprocess.Popen[bytes] | None = None  # systemd-nspawn
    pid: int | None = None  # the host's systemd, in the controller's pid namespace

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.index}.2"

    @property
    def gateway(self) -> str:
        """The controller's address as the host sees it."""
        return f"{SUBNET_PREFIX}.{self.index}.1"

    def nsenter_args(self) -> list[str]:
        assert self.pid is not None, f"{self.name} is not running"
        return ["nsenter", "-t", str(self.pid), "-a", "--", "env", "-i", f"PATH={HOST_PATH}",
                "LANG=C.UTF-8", "HOME=/root", "TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]

    def run(self, cmd: str | Sequence[str], *, check: bool = False, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (argv, or a string for /bin/sh -c) as root inside the host."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run([*self.nsenter_args(), *argv], input=input, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: {argv} exited with {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a file inside the host as root (missing parent dirs are made 0755); it is
        created 0600 and then given ``mode``, so a secret is never readable on the way."""
        self.run(f"mkdir -p \"$(dirname '{path}')\" && (umask 077 && cat > '{path}') "
                 f"&& chmod {mode:o} '{path}'", input=content, check=True)

    def copy_in(self, src: Path, dest: str, timeout: float = 120) -> None:
        """Copy a controller directory's contents into ``dest`` inside the host (tar through
        nsenter, so the path is resolved by the host), owned by root."""
        self.run(["mkdir", "-p", dest], check=True)
        with subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "."],
                              stdout=subprocess.PIPE) as tar:
            proc = subprocess.run(
                [*self.nsenter_args(), "tar", "-C", dest, "--no-same-owner", "-xf", "-"],
                stdin=tar.stdout, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or tar.returncode != 0:
            raise AssertionError(f"{self.name}: copying {src} to {dest} failed:\n{proc.stderr}")

    def ssh_args(self) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", f"root@{self.address}"]

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.ssh_args(), command], capture_output=True, text=True,
                              timeout=timeout)

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        args = ["journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines)]
        if unit:
            args += ["-u", unit]
        try:
            proc = self.run(args, timeout=30)
        except Exception as exc:  # the journal is for diagnosis: never mask the real failure
            return f"(journal of {self.name} unavailable: {exc})"
        return proc.stdout + proc.stderr

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def system_state(self) -> str:
        if not self.running():
            return "not running"
        try:
            return self.run(["systemctl", "is-system-running"], timeout=10).stdout.strip()
        except subprocess.TimeoutExpired:
            return "timeout"

    def sshd_answers(self) -> bool:
        try:
            with socket.create_connection((self.address, 22), timeout=1) as s:
                s.settimeout(2)
                return s.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def stop(self, timeout: float = 30) -> None:
        """Power off through systemd; SIGKILL the container's PID 1 (its whole pid namespace),
        then nspawn, if it lingers. Only the pids this host started."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.pid is not None:
            with contextlib.suppress(Exception):
                self.run(["systemctl", "poweroff", "--no-block"], timeout=10)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} still up {timeout}s after poweroff: killing pid {self.pid}")
                _kill_pid(self.pid)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pid = None


def _free_subnets(count: int) -> list[int]:
    used = set()
    for line in sh("ip", "-o", "-4", "addr", "show").stdout.splitlines():
        for word in line.split():
            if word.startswith(f"{SUBNET_PREFIX}."):
                used.add(int(word.split(".")[2]))
    used |= {int(p.name.rsplit("-", 1)[1]) for p in Path("/run/netns").glob("edged-fleet-*")
             if p.name.rsplit("-", 1)[1].isdigit()} if Path("/run/netns").exists() else set()
    free = [n for n in range(1, 255) if n not in used]
    if len(free) < count:
        raise RuntimeError(f"no {count} free subnets {SUBNET_PREFIX}.N.0/24 left")
    return free[:count]


class Fleet:
    """``fleet = Fleet.start(n=3)``; ``fleet.hosts`` (also ``fleet[0]``, ``for h in fleet``);
    ``fleet.close()`` (or ``with Fleet.start(3) as fleet:``) stops and removes everything."""

    def __init__(self, workdir: Path, state: RunState, key: Path) -> None:
        self.workdir = workdir
        self.state = state
        self.key = key
        self.hosts: list[Host] = []
        self.timings: dict[str, float] = {}
        self.tree: Path | None = None
        self.tag = workdir.name.rsplit("-", 1)[-1]

    # ---- lifecycle

    @classmethod
    def start(cls, n: int = 3, *, boot_timeout: float = 90,
              cache_root: Path = CACHE_ROOT) -> Fleet:
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"missing on the controller: {', '.join(missing)} "
                               "(apt-get install debootstrap systemd-container openssh-client)")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        sweep_stale_runs()
        started = time.monotonic()
        tree = ensure_tree(cache_root)
        tree_time = time.monotonic() - started
        workdir = Path(tempfile.mkdtemp(prefix="edged-fleet-", dir="/var/tmp"))
        state = RunState(path=STATE_DIR / f"run-{os.getpid()}-{workdir.name}.json")
        state.add("dirs", str(workdir))
        key = workdir / "id_ed25519"
        fleet = cls(workdir, state, key)
        fleet.tree = tree
        fleet.timings["tree"] = tree_time
        try:
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edged-fleet-test", "-f", key)
            boot_started = time.monotonic()
            with _flock(STATE_DIR / "subnets.lock"):  # allocate and claim subnets atomically
                subnets = _free_subnets(n)
                for i, subnet in enumerate(subnets, 1):
                    fleet.hosts.append(fleet._launch(f"edged-host{i}", subnet, tree))
            for host in fleet.hosts:
                fleet._wait_booted(host, boot_timeout - (time.monotonic() - boot_started))
            fleet.timings["boot"] = time.monotonic() - boot_started
            log(f"{n} hosts up in {fleet.timings['boot']:.1f}s (tree: {tree_time:.1f}s): "
                + ", ".join(f"{h.name}={h.address}" for h in fleet.hosts))
        except BaseException:
            for host in fleet.hosts:
                log(f"--- console of {host.name}:\n{host.console()}")
            fleet.close()
            raise
        return fleet

    def _launch(self, name: str, subnet: int, tree: Path) -> Host:
        base = self.workdir / name
        for sub in ("upper", "work", "root"):
            (base / sub).mkdir(parents=True)
        root = base / "root"
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={tree},upperdir={base / 'upper'},workdir={base / 'work'}", root)
        self.state.add("mounts", str(root))
        host = Host(name=name, index=subnet, root=root, netns=f"edged-fleet-{subnet}",
                    key=self.key, console_log=base / "console.log")
        self._personalize(host)
        self._network(host)
        self._boot(host)
        return host

    def _personalize(self, host: Host) -> None:
        root = host.root
        (root / "etc/hostname").write_text(f"{host.name}\n")
        (root / "etc/hosts").write_text(
            f"127.0.0.1 localhost\n127.0.1.1 {host.name}\n{host.gateway} controller\n"
            f"::1 localhost ip6-localhost ip6-loopback\n")
        auth = root / "root/.ssh/authorized_keys"
        auth.write_text(Path(f"{self.key}.pub").read_text())
        auth.chmod(0o600)
        sh("ssh-keygen", "-A", "-f", root)  # the host's own host keys

    def _network(self, host: Host) -> None:
        ns, ctl = host.netns, f"edfl{host.index}"
        sh("ip", "netns", "add", ns)
        self.state.add("netns", ns)
        sh("ip", "link", "add", ctl, "type", "veth", "peer", "name", "host0", "netns", ns)
        self.state.add("links", ctl)
        sh("ip", "addr", "add", f"{host.gateway}/24", "dev", ctl)
        sh("ip", "link", "set", ctl, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "host0")
        sh("ip", "-n", ns, "link", "set", "host0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", host.gateway)

    def _boot(self, host: Host) -> None:
        nspawn = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                  "-D", str(host.root), f"--machine={host.name}",
                  f"--network-namespace-path=/run/netns/{host.netns}"]
        cgroups: list[Path] = []
        if host_has_systemd():
            argv = ["systemd-run", "--scope", "--quiet", "--collect", "--property=Delegate=yes",
                    f"--unit=edged-fleet-{self.tag}-{host.name}", *nspawn]
        else:
            argv = nspawn
            for cg_root in _cgroup_roots():
                cg = cg_root / f"edged-fleet-{self.tag}" / host.name
                cg.mkdir(parents=True)
                self.state.add("cgroups", str(cg))
                cgroups.append(cg)
            for cg_root in _cgroup_roots():  # after the hosts' own: removed last
                parent = str(cg_root / f"edged-fleet-{self.tag}")
                with contextlib.suppress(ValueError):
                    self.state.cgroups.remove(parent)
                self.state.add("cgroups", parent)

        def join_cgroups() -> None:  # in the child, before exec: nspawn starts in its own
            for cg in cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()))

        console = open(host.console_log, "wb")  # noqa: SIM115 - the child keeps it
        try:
            host.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=join_cgroups if cgroups else None)
        finally:
            console.close()
        self.state.add("pids", host.proc.pid)

    def _wait_booted(self, host: Host, timeout: float) -> None:
        assert host.proc is not None
        proc = host.proc

        def child() -> int | None:
            if proc.poll() is not None:
                raise AssertionError(f"{host.name}: nspawn exited with {proc.returncode}:\n"
                                     f"{host.console()}")
            return _nspawn_child(proc.pid)

        host.pid = wait_for(child, max(timeout, 5), 0.05, what=f"{host.name}'s systemd")
        self.state.add("pids", host.pid)
        wait_for(lambda: host.system_state() in ("running", "degraded") or not host.running(),
                 max(timeout, 5), 0.2,
                 what=lambda: f"{host.name} to boot (state {host.system_state()}):\n"
                              f"{host.console()}\n{host.journal(lines=60)}")
        assert host.running(), f"{host.name} stopped while booting:\n{host.console()}"
        wait_for(host.sshd_answers, 30, 0.2, what=f"sshd on {host.name} ({host.address}:22)")

    def close(self) -> None:
        """Stop every host and remove every resource of this run; raise if any remains."""
        for host in self.hosts:
            try:
                host.stop()
            except Exception as exc:
                log(f"stopping {host.name}: {exc}")
        for host in self.hosts:  # nspawn may leave its propagation dir behind
            with contextlib.suppress(OSError):
                Path(f"/run/systemd/nspawn/propagate/{host.name}").rmdir()
        errors = self.state.undo()
        if errors:
            raise RuntimeError("fleet clean-up left:\n" + "\n".join(errors))

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)


# --------------------------------------------------------------------------- wheelhouse

_SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", ".hypothesis", ".import_linter_cache", "*.pyc",
)
_PASS_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
             "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def build_wheelhouse(tree: Path, project_dir: Path, out_dir: Path, *,
                     timeout: float = 900) -> list[Path]:
    """Wheels of the project and every dependency, resolved by the hosts' own Python.

    Runs ``python3 -m venv`` and ``pip wheel`` inside an overlay of ``tree`` with
    ``systemd-nspawn --pipe`` on the controller's network (so PyPI is reachable): Debian 12's
    python3 is 3.11.2, and redis-py needs async-timeout only below 3.11.3, so a wheelhouse
    resolved on another Python would miss it. The project is copied (without venvs, caches,
    .git) so the build never writes into ``project_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edged-wheelhouse-", dir="/var/tmp"))
    state = RunState(path=STATE_DIR / f"run-{os.getpid()}-{work.name}.json")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state.add("dirs", str(work))
    # mkdtemp's suffix may hold "_", which nspawn refuses in a machine name.
    name = f"edged-wh-{work.name.rsplit('-', 1)[-1].replace('_', '0')}"
    try:
        for sub in ("upper", "work", "root"):
            (work / sub).mkdir()
        root = work / "root"
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={tree},upperdir={work / 'upper'},workdir={work / 'work'}", root)
        state.add("mounts", str(root))
        shutil.copytree(project_dir, root / "src", ignore=_SOURCE_IGNORE)
        script = ("set -e; python3 -m venv /tmp/wh-venv; "
                  "/tmp/wh-venv/bin/python -V; "
                  "/tmp/wh-venv/bin/pip wheel --disable-pip-version-check --progress-bar off "
                  "--wheel-dir /wheelhouse /src")
        argv = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe",
                "-D", str(root), f"--machine={name}", f"--bind={out_dir.resolve()}:/wheelhouse",
                "--resolv-conf=copy-host"]
        ca = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")
        if ca and Path(ca).is_file():  # a proxy's CA the tree's own bundle may lack
            argv += [f"--bind-ro={Path(ca).resolve()}:/run/controller-ca.crt",
                     "--setenv=PIP_CERT=/run/controller-ca.crt"]
        argv += [f"--setenv={k}={os.environ[k]}" for k in _PASS_ENV if k in os.environ]
        argv += ["--", "/bin/sh", "-c", script]
        cgroups: list[Path] = []
        if host_has_systemd():
            argv = ["systemd-run", "--scope", "--quiet", "--collect", "--property=Delegate=yes",
                    f"--unit={name}", *argv]
        else:
            for cg_root in _cgroup_roots():
                cg = cg_root / name
                cg.mkdir()
                state.add("cgroups", str(cg))
                cgroups.append(cg)

        # PyPI is the one thing here that can fail for a moment: one more try, then the error.
        for attempt in (1, 2):
            returncode, output = _run_in_container(argv, state, cgroups, timeout)
            if returncode == 0:
                break
            log(f"pip wheel in {tree} (attempt {attempt}) exited with {returncode}:\n{output}")
        else:
            raise RuntimeError(f"pip wheel in {tree} exited with {returncode}:\n{output}")
    finally:
        with contextlib.suppress(OSError):
            Path(f"/run/systemd/nspawn/propagate/{name}").rmdir()
        errors = state.undo()
        if errors:
            log("wheelhouse clean-up left: " + "; ".join(errors))
    wheels = sorted(out_dir.glob("*.whl"))
    names = {w.name.split("-")[0].lower() for w in wheels}
    for needed in ("edged", "redis", "async_timeout"):
        if needed not in names:
            raise RuntimeError(f"wheelhouse {out_dir} lacks {needed}: {sorted(names)}\n{output}")
    return wheels


def _run_in_container(argv: list[str], state: RunState, cgroups: list[Path],
                      timeout: float) -> tuple[int, str]:
    """Run a non-booting nspawn (in ``cgroups`` when given) to the end: exit code, output."""

    def join_cgroups() -> None:
        for cg in cgroups:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=join_cgroups if cgroups else None)
    state.add("pids", proc.pid)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        return -9, output + f"\n(timed out after {timeout}s)"
    return proc.returncode, output
