"""``edged pending|groups|consumers|status``: look inside consumer groups (library:
admin/pending.py, admin/verdicts.py, admin/registry.py).

A STREAM naming a sharded logical stream of the config covers all its shards, summed; with
``--detail`` one row per shard (admin/shards.py).
"""

import functools
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from edged.cli.options import (
    ConfigOpt,
    GroupOpt,
    JsonOpt,
    StreamArg,
    TimeoutOpt,
    UrlOpt,
    exits,
    redis_client,
    resolve_connection,
    run_once,
)
from edged.cli.render import WideOpt, age, make_table, print_json, print_table
from edged.durations import Duration
from edged.errors import EXIT_FAILURE, EXIT_OK, UsageError

# The library (edged.admin, which imports redis), anyio and rich are imported in the commands
# that use them: start-up time (see edged/cli/__init__.py).
if TYPE_CHECKING:
    from redis.asyncio import Redis
    from rich.table import Table

    from edged.admin.pending import Consumer, ConsumersReport, PendingPage, PendingSummary
    from edged.admin.registry import DaemonRecord
    from edged.admin.streams import StreamInfo
    from edged.admin.verdicts import GroupHealth, GroupsReport, GroupsWatch, StatusReport
    from edged.config import Config

    Item = Table | str
    """What a command prints: tables, and lines of text between them."""

T = TypeVar("T")

WatchOpt = Annotated[
    float | None,
    typer.Option("--watch", help="Refresh every SECONDS until Ctrl-C (exit 0); with --json, one "
                 "document per line.", min=0.1, show_default=False),
]
SampleOpt = Annotated[
    str,
    typer.Option("--sample", help="Time between the two samples that the STALLED and BEHIND "
                 "verdicts compare (0s: one sample, no such verdicts). With --watch, each refresh "
                 "compares with the previous one."),
]
AllOpt = Annotated[bool, typer.Option(
    "--all", help="Every stream that has a consumer group (SCAN), not only those live daemons "
    "read and the config names: groups nobody runs any more are where orphaned entries hide.")]
CheckOpt = Annotated[
    bool,
    typer.Option("--check", help="Exit 1 if any verdict is not OK (status: or a daemon is not ready)."),
]
ShardOpt = Annotated[
    int | None,
    typer.Option("--shard", help="Only shard I (its index) of a sharded STREAM of the config.",
                 min=0, show_default=False),
]
DetailOpt = Annotated[
    bool,
    typer.Option("--detail", help="One row per shard of a sharded stream, not their sum."),
]


def _duration(text: str, option: str) -> float:
    try:
        return Duration.parse(text).seconds
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


# --------------------------------------------------------------------------- running


def _watch(
    config: ConfigOpt, url: UrlOpt, seconds: float, as_json: bool,
    fetch: "Callable[[Redis, Config], Awaitable[T]]", render: "Callable[[T], list[Item]]",
) -> None:
    """Fetch and show every ``seconds`` until Ctrl-C, which exits 0.

    On a terminal the view is redrawn in place; piped, each refresh is printed in full after a
    header line (with --json: one document per line).
    """
    import anyio
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    cfg, resolved_url = resolve_connection(config, url)
    tty = sys.stdout.isatty() and not as_json

    async def go() -> None:
        async with redis_client(cfg, resolved_url) as client:
            if tty:
                console = Console(highlight=False)
                with Live(console=console, auto_refresh=False) as live:
                    while True:
                        value = await fetch(client, cfg)
                        header = Text(f"every {seconds:g}s, {time.strftime('%H:%M:%S')}  (Ctrl-C ends)")
                        items = [Text(i) if isinstance(i, str) else i for i in render(value)]
                        live.update(Group(header, *items), refresh=True)
                        await anyio.sleep(seconds)
            while True:  # piped: no cursor to move back
                value = await fetch(client, cfg)
                if as_json:
                    print_json(value)
                else:
                    typer.echo(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} every {seconds:g}s")
                    _emit(render(value))
                sys.stdout.flush()
                await anyio.sleep(seconds)

    try:
        anyio.run(go)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_OK) from None
    except BrokenPipeError:  # `--watch | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        raise typer.Exit(EXIT_OK) from None


def _show(value: T, as_json: bool, render: "Callable[[T], list[Item]]") -> None:
    if as_json:
        print_json(value)
    else:
        _emit(render(value))


def _emit(items: "Sequence[Item]") -> None:
    for item in items:
        if isinstance(item, str):
            typer.echo(item)
        else:
            print_table(item)


# --------------------------------------------------------------------------- rendering


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _idle(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else age(seconds)


def _lag(g: "GroupHealth") -> str:
    if g.lag is None:
        return "unknown"
    text = str(g.lag) if g.lag_source == "redis" else f"{g.lag} (counted)"
    if g.lag_change:
        text += f" ({g.lag_change:+d})"
    return text


def _shard(index: int | None) -> str:
    return "-" if index is None else str(index)


def _over(shards: Sequence[object] | None) -> str:
    return "" if shards is None else f" over {len(shards)} shards"


def _render_summary(s: "PendingSummary") -> "list[Item]":
    if not s.pending:
        return [f"{s.stream} group {s.group}: nothing pending{_over(s.shards)}"]
    head = (f"{s.stream} group {s.group}: {s.pending} pending{_over(s.shards)}, ids {s.lowest_id} .. "
            f"{s.highest_id}, oldest {age(s.oldest_age_seconds)}")
    table = make_table(
        ("CONSUMER", "PENDING", "IDLE", "ALIVE", "HOST"),
        [(c.consumer, c.pending, _idle(c.idle_seconds), _yes(c.alive), c.host) for c in s.consumers],
        drop=("HOST",),
    )
    return [head, table]


def _render_page(p: "PendingPage") -> "list[Item]":
    if not p.entries:
        return [f"{p.stream} group {p.group}: no pending entries match"]
    if any(e.stream is not None for e in p.entries):  # a sharded stream: say each entry's shard
        table = make_table(
            ("ID", "SHARD", "STREAM", "CONSUMER", "IDLE", "DELIVERIES", "AGE"),
            [(e.id, _shard(e.shard), e.stream, e.consumer, _idle(e.idle_seconds), e.deliveries,
              age(e.age_seconds)) for e in p.entries],
            drop=("STREAM", "AGE", "SHARD"),
        )
    else:
        table = make_table(
            ("ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"),
            [(e.id, e.consumer, _idle(e.idle_seconds), e.deliveries, age(e.age_seconds))
             for e in p.entries],
            drop=("AGE",),
        )
    items: list[Item] = [table]
    if p.next_after is not None:
        items.append(f"next page: --after {p.next_after}")
    return items


def _group_cells(g: "GroupHealth") -> tuple[object, ...]:
    return (g.consumers, g.pending, _lag(g), g.last_delivered_id, g.entries_read,
            age(g.oldest_pending_age_seconds), g.dead_letters, ",".join(g.verdicts))


GROUP_HEADERS = ("CONSUMERS", "PENDING", "LAG", "LAST DELIVERED", "ENTRIES READ", "OLDEST PENDING",
                 "DEAD LETTERS", "VERDICT")
# At 80 columns the verdict, lag and pending stay; ids and counts a glance can skip go first.
GROUP_DROP = ("ENTRIES READ", "LAST DELIVERED", "CONSUMERS", "DEAD LETTERS", "OLDEST PENDING")


def _groups_table(groups: "Sequence[GroupHealth]") -> "list[Item]":
    if not groups:
        return ["no consumer groups found"]
    if any(g.logical is not None for g in groups):  # shards' own rows: say which shard
        table = make_table(("STREAM", "SHARD", "GROUP", *GROUP_HEADERS),
                           [(g.stream, _shard(g.shard), g.group, *_group_cells(g)) for g in groups],
                           drop=GROUP_DROP)
    else:
        table = make_table(("STREAM", "GROUP", *GROUP_HEADERS),
                           [(g.stream, g.group, *_group_cells(g)) for g in groups], drop=GROUP_DROP)
    reasons = [f"{g.stream} {g.group}: {v}: {r}" for g in groups for v, r in
               zip(g.verdicts, g.reasons, strict=False)]
    sums = [f"{g.stream} {g.group}: the sum of {len(g.shards)} shards (--detail: one row per shard)"
            for g in groups if g.shards is not None]
    return [table, *reasons, *sums]


def _render_groups(report: "GroupsReport") -> "list[Item]":
    return [*_groups_table(report.groups), *_streams_table(report.streams)]


def _streams_table(streams: "Sequence[StreamInfo]") -> "list[Item]":
    """With --all: what each stream holds (a stream nobody reads can be seen growing)."""
    if not streams:
        return []
    return ["", make_table(
        ("STREAM", "LENGTH", "FIRST", "LAST", "MEMORY"),
        [(s.stream, s.length, s.first_id, s.last_id, _size(s.memory_bytes)) for s in streams],
        drop=("FIRST", "MEMORY"))]


def _size(count: int | None) -> str | None:
    if count is None:
        return None
    if count < 1024:
        return f"{count}B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f}{unit}"


def _render_consumers(report: "ConsumersReport", detail: bool = False) -> "list[Item]":
    if detail and report.shards is not None:
        rows = [(part.stream, _shard(part.shard), *_consumer_cells(c))
                for part in report.shards for c in part.consumers]
        if rows:
            return [make_table(("STREAM", "SHARD", *CONSUMER_HEADERS), rows, drop=CONSUMER_DROP)]
    if not report.consumers:
        return [f"{report.stream} group {report.group}: no consumers{_over(report.shards)}"]
    return [make_table(CONSUMER_HEADERS, [_consumer_cells(c) for c in report.consumers],
                       drop=CONSUMER_DROP)]


CONSUMER_HEADERS = ("CONSUMER", "PENDING", "IDLE", "INACTIVE", "ALIVE", "HOST", "PID", "LAST SEEN")
CONSUMER_DROP = ("PID", "LAST SEEN", "INACTIVE", "HOST")


def _consumer_cells(c: "Consumer") -> tuple[object, ...]:
    return (c.consumer, c.pending, _idle(c.idle_seconds), _idle(c.inactive_seconds), _yes(c.alive),
            c.host, c.pid, None if c.last_seen_seconds is None else age(c.last_seen_seconds) + " ago")


def _daemon_streams(d: "DaemonRecord", groups: "Sequence[GroupHealth]") -> str:
    """The daemon's ``stream/group`` pairs, the shards of a summed logical row as that row."""
    logical = {f"{s.stream}/{s.group}": f"{g.stream}/{g.group} ({len(g.shards)} shards)"
               for g in groups if g.shards is not None for s in g.shards}
    return " ".join(dict.fromkeys(logical.get(pair, pair) for pair in d.streams))


def _render_status(report: "StatusReport") -> "list[Item]":
    items: list[Item] = []
    if report.daemons:
        items.append(make_table(
            ("CONSUMER", "HOST", "PID", "VERSION", "UPTIME", "STREAMS", "IN FLIGHT", "PROCESSED",
             "FAILED", "DEAD LETTERED", "OUTBOX", "READY", "LAST BEAT"),
            [(d.consumer, d.host, d.pid, d.version, age(d.uptime_seconds),
              _daemon_streams(d, report.groups), d.in_flight, d.processed, d.failed,
              d.dead_lettered, "-" if d.outbox is None else d.outbox, _yes(d.ready),
              _idle(d.beat_age_seconds) + " ago")
             for d in report.daemons],
            drop=("VERSION", "PID", "UPTIME", "HOST", "DEAD LETTERED", "FAILED", "PROCESSED",
                  "IN FLIGHT", "OUTBOX", "LAST BEAT"),
            shorten=("STREAMS",),
        ))
    else:
        items.append("no live daemons")
    items += [f"DEGRADED {d.consumer} {where}: {error}"
              for d in report.daemons for where, error in sorted(d.degraded.items())]
    items += [f"PAUSED {d.consumer} {where} (edged resume ends it)"
              for d in report.daemons for where in d.paused]
    items += ["", *_groups_table(report.groups), ""]
    items += _streams_table(report.streams)
    items.append("healthy" if report.healthy else "UNHEALTHY")
    return items


# --------------------------------------------------------------------------- commands

R = TypeVar("R", "GroupsReport", "StatusReport")


def _sampled(
    config: ConfigOpt, url: UrlOpt, sample: str, watch: float | None, check: bool,
    as_json: bool, make_watch: "Callable[[Config, float], GroupsWatch]",
    report: "Callable[[Redis, GroupsWatch], Awaitable[R]]", render: "Callable[[R], list[Item]]",
) -> None:
    """`groups` and `status`: verdicts from samples `--sample` apart, or refreshed by --watch."""
    if watch is not None and check:
        raise UsageError("--check gives one answer; it does not go with --watch")
    seconds = _duration(sample, "--sample")
    state: list[GroupsWatch] = []

    async def fetch(client: "Redis", cfg: "Config") -> R:
        if not state:
            state.append(make_watch(cfg, seconds))
        return await report(client, state[0])

    if watch is not None:
        _watch(config, url, watch, as_json, fetch, render)
        return
    result = run_once(config, url, fetch)
    _show(result, as_json, render)
    if check and not result.healthy:
        raise typer.Exit(EXIT_FAILURE)




def _detail_filters(detail: bool, idle: str | None, consumer: str | None,
                    min_deliveries: int | None, after: str | None) -> float | None:
    """Check `edged pending`'s --detail filters; the --idle span in seconds, if given."""
    from edged.admin.dlq import check_range_id

    if not detail and (idle, consumer, min_deliveries, after) != (None, None, None, None):
        raise UsageError("--idle, --consumer, --min-deliveries and --after go with --detail")
    if after is not None:
        check_range_id(after, "--after")
    return _duration(idle, "--idle") if idle is not None else None

@exits
def pending(
    stream: StreamArg,
    group: GroupOpt = "edged",
    detail: Annotated[bool, typer.Option(
        "--detail", help="List the entries, not a summary (over a sharded stream: of every "
        "shard, each with its shard).")] = False,
    idle: Annotated[str | None, typer.Option(
        help="--detail: only entries idle at least this long (like 30s, 5m).", show_default=False)] = None,
    consumer: Annotated[str | None, typer.Option(
        help="--detail: only this consumer's entries.", show_default=False)] = None,
    min_deliveries: Annotated[int | None, typer.Option(
        help="--detail: only entries delivered at least N times.", min=1, show_default=False)] = None,
    count: Annotated[int, typer.Option(help="--detail: entries per page.", min=1)] = 50,
    after: Annotated[str | None, typer.Option(
        help="--detail: start after this id (the previous page's last).", show_default=False)] = None,
    shard: ShardOpt = None,
    watch: WatchOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Pending entries of a group: a summary per consumer, or with --detail the entries.

    Over a sharded stream of the config: summed over its shards (--json adds each shard's).
    """
    from edged.admin.pending import pending_entries_for, pending_summary_for
    from edged.admin.registry import read_registry
    from edged.admin.shards import resolve
    from edged.layout import key_prefix

    min_idle = _detail_filters(detail, idle, consumer, min_deliveries, after)

    if detail:
        async def fetch_page(client: "Redis", cfg: "Config") -> "PendingPage":
            return await pending_entries_for(
                client, resolve(cfg, stream, group, shard), group, count=count, after=after,
                min_idle=min_idle, consumer=consumer, min_deliveries=min_deliveries)

        if watch is not None:
            _watch(config, url, watch, as_json, fetch_page, _render_page)
        else:
            _show(run_once(config, url, fetch_page), as_json, _render_page)
        return

    async def fetch_summary(client: "Redis", cfg: "Config") -> "PendingSummary":
        target = resolve(cfg, stream, group, shard)
        registry = await read_registry(client, key_prefix(cfg))
        return await pending_summary_for(client, registry, target, group)

    if watch is not None:
        _watch(config, url, watch, as_json, fetch_summary, _render_summary)
    else:
        _show(run_once(config, url, fetch_summary), as_json, _render_summary)


@exits
def groups(
    stream: Annotated[str | None, typer.Argument(
        help="The stream, or a sharded stream of the config [default: the streams live daemons "
        "read and the config's; if none, every stream].", show_default=False)] = None,
    sample: SampleOpt = "1s",
    detail: DetailOpt = False,
    watch: WatchOpt = None,
    check: CheckOpt = False,
    every: AllOpt = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Consumer groups with lag, pending, last-delivered id and a verdict:
    OK, BEHIND, STALLED, STUCK, ORPHANED or RETENTION-BLOCKED (see README.md).

    A sharded stream of the config is one row, its shards summed (the worst verdict of its
    shards); --detail gives one row per shard.
    """
    from edged.admin.verdicts import GroupsWatch, groups_report

    if every and stream is not None:
        raise UsageError("--all looks at every stream; give a stream or --all, not both")
    _sampled(config, url, sample, watch, check, as_json,
             lambda cfg, seconds: GroupsWatch(cfg, stream, sample_seconds=seconds, detail=detail,
                                              every=every),
             groups_report, _render_groups)


@exits
def consumers(
    stream: StreamArg,
    group: GroupOpt = "edged",
    detail: DetailOpt = False,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Consumers of a group: pending, idle, inactive, alive (heartbeat), host, pid.

    Over a sharded stream of the config: one row per consumer, summed over the shards
    (--detail: per shard; --json has both).
    """
    from edged.admin.pending import consumers_for
    from edged.admin.registry import read_registry
    from edged.admin.shards import resolve
    from edged.layout import key_prefix

    async def fetch(client: "Redis", cfg: "Config") -> "ConsumersReport":
        target = resolve(cfg, stream, group, shard)
        registry = await read_registry(client, key_prefix(cfg))
        return await consumers_for(client, registry, target, group)

    _show(run_once(config, url, fetch), as_json, functools.partial(_render_consumers, detail=detail))


@exits
def status(
    sample: SampleOpt = "1s",
    detail: DetailOpt = False,
    watch: WatchOpt = None,
    check: CheckOpt = False,
    every: AllOpt = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The fleet: every live daemon, then every group of the streams they read (and the
    config's) with lag and verdict; a sharded stream's shards summed unless --detail."""
    from edged.admin.verdicts import GroupsWatch, status_report

    _sampled(config, url, sample, watch, check, as_json,
             lambda cfg, seconds: GroupsWatch(cfg, sample_seconds=seconds, detail=detail,
                                              every=every),
             status_report, _render_status)
