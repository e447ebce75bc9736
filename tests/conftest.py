from __future__ import annotations

import fcntl
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers import Server, free_port
from tests.support import DaemonProcess, edged_client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the session; tests keep apart by using their own key names."""
    srv = Server(port=free_port(), data_dir=tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


@pytest.fixture
def demo_port_lock() -> Iterator[None]:
    """Held for a whole test that starts the embedded demo (it listens on 127.0.0.1:9478):
    one such test at a time across pytest-xdist workers. Taken before the test's other
    fixtures (tests.markers.DEMO_PORT uses it), so it is released after their teardown has
    stopped the daemon."""
    with (Path(tempfile.gettempdir()) / "edged-tests-demo-port.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Any]:
    """An asyncio client set up as the daemon sets up its own (tests.support.edged_client). Its
    socket timeout outlasts every blocking read the tests ask for (read-block <= 10 s)."""
    c = edged_client(server.url, socket_timeout=30)
    yield c
    await c.aclose()


@pytest.fixture
def r(server: Server) -> Iterator[redis.Redis]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def stream() -> str:
    """A stream name no other test uses."""
    return f"t:{uuid.uuid4().hex[:10]}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def spawned() -> Iterator[list[DaemonProcess]]:
    """Every edged process a test starts (DaemonProcess) goes in this list; any still running
    at teardown is killed by its pid (resumed first, in case the test paused it)."""
    procs: list[DaemonProcess] = []
    yield procs
    for p in procs:
        p.kill()
