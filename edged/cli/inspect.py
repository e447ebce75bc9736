"""``edged pending|groups|consumers|status``: look inside consumer groups (library:
admin/pending.py, admin/verdicts.py, admin/registry.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, TypeVar

import anyio
import typer
from redis.asyncio import Redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edged.admin.dlq import check_range_id
from edged.admin.pending import ConsumersReport, PendingPage, PendingSummary, pending_entries, pending_summary
from edged.admin.pending import consumers as consumers_of
from edged.admin.registry import read_registry
from edged.admin.verdicts import (
    GroupHealth,
    GroupsReport,
    GroupsWatch,
    StatusReport,
    groups_report,
    status_report,
)
from edged.cli.options import (
    ConfigOpt,
    GroupOpt,
    JsonOpt,
    StreamArg,
    UrlOpt,
    exits,
    redis_client,
    resolve_connection,
    run_once,
)
from edged.cli.render import age, make_table, print_json, print_table
from edged.config import Config
from edged.durations import Duration
from edged.errors import EXIT_FAILURE, EXIT_OK, UsageError
from edged.layout import key_prefix

T = TypeVar("T")
Item = Table | str
"""What a command prints: tables, and lines of text between them."""

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
CheckOpt = Annotated[
    bool,
    typer.Option("--check", help="Exit 1 if any verdict is not OK (status: or a daemon is not ready)."),
]


def _duration(text: str, option: str) -> float:
    try:
        return Duration.parse(text).seconds
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


# --------------------------------------------------------------------------- running


def _watch(
    config: ConfigOpt, url: UrlOpt, seconds: float, as_json: bool,
    fetch: Callable[[Redis, Config], Awaitable[T]], render: Callable[[T], list[Item]],
) -> None:
    """Fetch and show every ``seconds`` until Ctrl-C, which exits 0.

    On a terminal the view is redrawn in place; piped, each refresh is printed in full after a
    header line (with --json: one document per line).
    """
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


def _show(value: T, as_json: bool, render: Callable[[T], list[Item]]) -> None:
    if as_json:
        print_json(value)
    else:
        _emit(render(value))


def _emit(items: Sequence[Item]) -> None:
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


def _lag(g: GroupHealth) -> str:
    if g.lag is None:
        return "unknown"
    text = str(g.lag) if g.lag_source == "redis" else f"{g.lag} (counted)"
    if g.lag_change:
        text += f" ({g.lag_change:+d})"
    return text


def _render_summary(s: PendingSummary) -> list[Item]:
    if not s.pending:
        return [f"{s.stream} group {s.group}: nothing pending"]
    head = (f"{s.stream} group {s.group}: {s.pending} pending, ids {s.lowest_id} .. {s.highest_id}, "
            f"oldest {age(s.oldest_age_seconds)}")
    table = make_table(
        ("CONSUMER", "PENDING", "IDLE", "ALIVE", "HOST"),
        [(c.consumer, c.pending, _idle(c.idle_seconds), _yes(c.alive), c.host) for c in s.consumers],
    )
    return [head, table]


def _render_page(p: PendingPage) -> list[Item]:
    if not p.entries:
        return [f"{p.stream} group {p.group}: no pending entries match"]
    items: list[Item] = [make_table(
        ("ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"),
        [(e.id, e.consumer, _idle(e.idle_seconds), e.deliveries, age(e.age_seconds)) for e in p.entries],
    )]
    if p.next_after is not None:
        items.append(f"next page: --after {p.next_after}")
    return items


def _groups_table(groups: Sequence[GroupHealth]) -> list[Item]:
    if not groups:
        return ["no consumer groups found"]
    table = make_table(
        ("STREAM", "GROUP", "CONSUMERS", "PENDING", "LAG", "LAST DELIVERED", "ENTRIES READ",
         "OLDEST PENDING", "DEAD LETTERS", "VERDICT"),
        [(g.stream, g.group, g.consumers, g.pending, _lag(g), g.last_delivered_id, g.entries_read,
          age(g.oldest_pending_age_seconds), g.dead_letters, ",".join(g.verdicts)) for g in groups],
    )
    reasons = [f"{g.stream} {g.group}: {v}: {r}" for g in groups for v, r in
               zip(g.verdicts, g.reasons, strict=False)]
    return [table, *reasons]


def _render_groups(report: GroupsReport) -> list[Item]:
    return _groups_table(report.groups)


def _render_consumers(report: ConsumersReport) -> list[Item]:
    if not report.consumers:
        return [f"{report.stream} group {report.group}: no consumers"]
    return [make_table(
        ("CONSUMER", "PENDING", "IDLE", "INACTIVE", "ALIVE", "HOST", "PID", "LAST SEEN"),
        [(c.consumer, c.pending, _idle(c.idle_seconds), _idle(c.inactive_seconds), _yes(c.alive),
          c.host, c.pid, None if c.last_seen_seconds is None else age(c.last_seen_seconds) + " ago")
         for c in report.consumers],
    )]


def _render_status(report: StatusReport) -> list[Item]:
    items: list[Item] = []
    if report.daemons:
        items.append(make_table(
            ("CONSUMER", "HOST", "PID", "VERSION", "UPTIME", "STREAMS", "IN FLIGHT", "PROCESSED",
             "FAILED", "DEAD LETTERED", "READY", "LAST BEAT"),
            [(d.consumer, d.host, d.pid, d.version, age(d.uptime_seconds), " ".join(d.streams),
              d.in_flight, d.processed, d.failed, d.dead_lettered, _yes(d.ready),
              _idle(d.beat_age_seconds) + " ago") for d in report.daemons],
        ))
    else:
        items.append("no live daemons")
    items += [f"DEGRADED {d.consumer} {where}: {error}"
              for d in report.daemons for where, error in sorted(d.degraded.items())]
    items += ["", *_groups_table(report.groups), ""]
    items.append("healthy" if report.healthy else "UNHEALTHY")
    return items


# --------------------------------------------------------------------------- commands

R = TypeVar("R", GroupsReport, StatusReport)


def _sampled(
    config: ConfigOpt, url: UrlOpt, sample: str, watch: float | None, check: bool,
    as_json: bool, make_watch: Callable[[Config, float], GroupsWatch],
    report: Callable[[Redis, GroupsWatch], Awaitable[R]], render: Callable[[R], list[Item]],
) -> None:
    """`groups` and `status`: verdicts from samples `--sample` apart, or refreshed by --watch."""
    if watch is not None and check:
        raise UsageError("--check gives one answer; it does not go with --watch")
    seconds = _duration(sample, "--sample")
    state: list[GroupsWatch] = []

    async def fetch(client: Redis, cfg: Config) -> R:
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



@exits
def pending(
    stream: StreamArg,
    group: GroupOpt = "edged",
    detail: Annotated[bool, typer.Option("--detail", help="List the entries, not a summary.")] = False,
    idle: Annotated[str | None, typer.Option(
        help="--detail: only entries idle at least this long (like 30s, 5m).", show_default=False)] = None,
    consumer: Annotated[str | None, typer.Option(
        help="--detail: only this consumer's entries.", show_default=False)] = None,
    min_deliveries: Annotated[int | None, typer.Option(
        help="--detail: only entries delivered at least N times.", min=1, show_default=False)] = None,
    count: Annotated[int, typer.Option(help="--detail: entries per page.", min=1)] = 50,
    after: Annotated[str | None, typer.Option(
        help="--detail: start after this id (the previous page's last).", show_default=False)] = None,
    watch: WatchOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pending entries of a group: a summary per consumer, or with --detail the entries."""
    filters = idle is not None or consumer is not None or min_deliveries is not None or after is not None
    if filters and not detail:
        raise UsageError("--idle, --consumer, --min-deliveries and --after go with --detail")
    min_idle = _duration(idle, "--idle") if idle is not None else None
    if after is not None:
        check_range_id(after, "--after")

    if detail:
        async def fetch_page(client: Redis, cfg: Config) -> PendingPage:
            return await pending_entries(
                client, stream, group, count=count, after=after, min_idle=min_idle,
                consumer=consumer, min_deliveries=min_deliveries)

        if watch is not None:
            _watch(config, url, watch, as_json, fetch_page, _render_page)
        else:
            _show(run_once(config, url, fetch_page), as_json, _render_page)
        return

    async def fetch_summary(client: Redis, cfg: Config) -> PendingSummary:
        registry = await read_registry(client, key_prefix(cfg))
        return await pending_summary(client, registry, stream, group)

    if watch is not None:
        _watch(config, url, watch, as_json, fetch_summary, _render_summary)
    else:
        _show(run_once(config, url, fetch_summary), as_json, _render_summary)


@exits
def groups(
    stream: Annotated[str | None, typer.Argument(
        help="The stream [default: the streams live daemons read and the config's; if none, "
        "every stream].", show_default=False)] = None,
    sample: SampleOpt = "1s",
    watch: WatchOpt = None,
    check: CheckOpt = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Consumer groups with lag, pending, last-delivered id and a verdict:
    OK, BEHIND, STALLED, STUCK or ORPHANED (see README.md)."""
    _sampled(config, url, sample, watch, check, as_json,
             lambda cfg, seconds: GroupsWatch(cfg, stream, sample_seconds=seconds),
             groups_report, _render_groups)


@exits
def consumers(
    stream: StreamArg,
    group: GroupOpt = "edged",
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Consumers of a group: pending, idle, inactive, alive (heartbeat), host, pid."""

    async def fetch(client: Redis, cfg: Config) -> ConsumersReport:
        registry = await read_registry(client, key_prefix(cfg))
        return await consumers_of(client, registry, stream, group)

    _show(run_once(config, url, fetch), as_json, _render_consumers)


@exits
def status(
    sample: SampleOpt = "1s",
    watch: WatchOpt = None,
    check: CheckOpt = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The fleet: every live daemon, then every group of the streams they read (and the
    config's) with lag and verdict."""
    _sampled(config, url, sample, watch, check, as_json,
             lambda cfg, seconds: GroupsWatch(cfg, sample_seconds=seconds),
             status_report, _render_status)
