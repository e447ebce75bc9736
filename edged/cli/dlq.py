"""``edged dlq``: look at, replay and purge a stream's dead-letter entries (library: dlq.py).

A sharded stream of the config covers the dead-letter streams of all its shards (``--shard``:
one shard's).
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from edged.cli.inspect import ShardOpt
from edged.cli.options import ConfigOpt, JsonOpt, TimeoutOpt, UrlOpt, exits, run_once
from edged.cli.render import WideOpt, age, make_table, print_json, print_table
from edged.errors import EXIT_FAILURE, UsageError

# The library (edged.admin.dlq, which imports redis) is imported in the commands: start-up time
# (see edged/cli/__init__.py).
if TYPE_CHECKING:
    from redis.asyncio import Redis

    from edged.admin import dlq
    from edged.config import Config

dlq_app = typer.Typer(
    help="Dead-letter entries of a stream: list, show, replay to the stream, purge.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

T = TypeVar("T")

StreamArg = Annotated[str, typer.Argument(
    help="The stream whose dead letters to work on; a sharded stream of the config: all its "
    "shards'.")]
DeadLetterOpt = Annotated[
    str | None,
    typer.Option(
        "--dead-letter",
        help="Dead-letter stream [default: the stream's dead-letter setting in the config, "
        "else <STREAM>:dead]; not with a sharded stream unless --shard picks one shard.",
        show_default=False,
    ),
]
IdsOpt = Annotated[
    list[str] | None,
    typer.Option("--id", help="A dead-letter entry id (repeatable).", show_default=False),
]


def _run(
    config: ConfigOpt, url: UrlOpt, stream: str, dead_letter: str | None, shard: int | None,
    action: "Callable[[Redis, str], Awaitable[T]]",
    over_shards: "Callable[[Redis, dlq.DeadLetters], Awaitable[T]]",
) -> T:
    """Resolve the connection and the dead-letter stream(s), then run ``action`` on one
    dead-letter stream, or ``over_shards`` on those of a sharded stream's shards."""
    from edged.admin import dlq
    from edged.admin.shards import resolve

    async def go(client: "Redis", cfg: "Config") -> T:
        target = resolve(cfg, stream, None, shard)
        if not target.sharded:
            return await action(client, dlq.dead_letter_stream(cfg, target.stream, dead_letter))
        if dead_letter:
            raise UsageError(f"{stream!r} is sharded: its shards' dead-letter streams are in the "
                             "config; --dead-letter goes with --shard I (one shard)")
        return await over_shards(client, dlq.DeadLetters.of(target))

    return run_once(config, url, go)


def _where(dead_letter: str | None, dead_letters: list[str] | None, stream: str) -> str:
    """Where the entries are, for people: one dead-letter stream, or a sharded stream's."""
    if dead_letter is not None:
        return dead_letter
    return f"the {len(dead_letters or [])} dead-letter streams of {stream}"


# --------------------------------------------------------------------------- rendering


def _first_line(text: str | None, limit: int = 100) -> str | None:
    if text is None:
        return None
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _shard(index: int | None) -> str:
    return "-" if index is None else str(index)


def _field_text(value: "dlq.FieldValue") -> str:
    return value if isinstance(value, str) else f"(not UTF-8, base64) {value.base64}"


def _report_failures(failures: "Sequence[dlq.Failure]") -> None:
    for failure in failures:
        typer.echo(f"edged: {failure.dead_id}: {failure.error}", err=True)


# --------------------------------------------------------------------------- commands


@dlq_app.command("list", epilog="**Example:** `edged dlq list edge:config --count 20`")
@exits
def list_entries(
    stream: StreamArg,
    count: Annotated[int, typer.Option(help="Entries per page.", min=1)] = 50,
    after: Annotated[
        str | None,
        typer.Option(help="Start after this dead-letter id (the previous page's last).",
                     show_default=False),
    ] = None,
    dead_letter: DeadLetterOpt = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List dead-letter entries, oldest first: reason, deliveries, where they came from.

    A sharded stream: the entries of all its shards' dead-letter streams, merged.
    """
    from edged.admin import dlq

    if after is not None:
        dlq.check_range_id(after, "--after")
    page = _run(config, url, stream, dead_letter, shard,
                lambda client, dead: dlq.list_dead(client, dead, count=count, after=after),
                lambda client, dls: dlq.list_dead_all(client, dls, count=count, after=after))
    if as_json:
        print_json(page)
        return
    where = _where(page.dead_letter, page.dead_letters, stream)
    if not page.entries:
        typer.echo(f"no dead-letter entries in {where}" + (f" after {after}" if after else ""))
        return
    sharded = page.dead_letters is not None
    print_table(make_table(
        ("DEAD ID", *(("SHARD",) if sharded else ()), "STREAM", "GROUP", "ORIGINAL ID",
         "DELIVERIES", "CONSUMER", "FAILED AT", "AGE", "REASON"),
        [
            (e.dead_id, *((_shard(e.shard),) if sharded else ()), e.stream, e.group,
             e.original_id, e.deliveries, e.consumer, e.failed_at, age(e.age_seconds),
             _first_line(e.reason))
            for e in page.entries
        ],
        drop=("FAILED AT", "CONSUMER", "GROUP", "DELIVERIES", "STREAM", "SHARD", "AGE"),
        shorten=("REASON",),
    ))
    summary = f"{len(page.entries)} of {page.length} entries in {where}"
    if page.next_after is not None:
        summary += f"; next page: --after {page.next_after}"
    typer.echo(summary)


@dlq_app.command("show", epilog="**Example:** `edged dlq show edge:config 1700000000000-0`")
@exits
def show(
    stream: StreamArg,
    dead_id: Annotated[str, typer.Argument(help="The dead-letter entry id.")],
    dead_letter: DeadLetterOpt = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Show one dead-letter entry in full: metadata, whole reason, original fields.

    A sharded stream: from whichever shard's dead-letter stream holds it (exit 2 if several do).
    """
    from edged.admin import dlq

    dlq.check_entry_id(dead_id, "DEAD_ID")
    entry = _run(config, url, stream, dead_letter, shard,
                 lambda client, dead: dlq.show_dead(client, dead, dead_id),
                 lambda client, dls: dlq.show_dead_all(client, dls, dead_id))
    if as_json:
        print_json(entry)
        return
    rows: list[tuple[str, object]] = [
        ("dead id", entry.dead_id),
        ("stream", entry.stream),
        ("group", entry.group),
        ("original id", entry.original_id),
        ("deliveries", entry.deliveries),
        ("consumer", entry.consumer),
        ("failed at", entry.failed_at),
        ("age", age(entry.age_seconds)),
        ("reason", entry.reason),
    ]
    if entry.dead_letter is not None:  # found over a sharded stream's dead-letter streams
        rows[1:1] = [("shard", _shard(entry.shard)), ("dead-letter stream", entry.dead_letter)]
    rows += [(f"field {name}", _field_text(value)) for name, value in entry.fields.items()]
    table = make_table(("FIELD", "VALUE"), rows, wrap=("VALUE",))
    table.show_header = False
    print_table(table)


@dlq_app.command("replay", epilog="**Example:** `edged dlq replay edge:config --all`")
@exits
def replay(
    stream: StreamArg,
    ids: IdsOpt = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every entry.")] = False,
    dead_letter: DeadLetterOpt = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-publish entries to their original stream, original fields only, and remove them.

    Each entry is published and deleted from the dead-letter stream in one atomic step.
    Exit 1 if any id could not be replayed (the others are still replayed). A sharded stream:
    each entry goes back to the shard it came from.
    """
    from edged.admin import dlq

    if bool(ids) == replay_all:
        raise UsageError("give the entries to replay with --id ID (repeatable), or --all")
    for dead_id in ids or []:
        dlq.check_entry_id(dead_id, "--id")
    chosen = None if replay_all else ids
    result = _run(config, url, stream, dead_letter, shard,
                  lambda client, dead: dlq.replay(client, dead, chosen),
                  lambda client, dls: dlq.replay_all(client, dls, chosen))
    if as_json:
        print_json(result)
    elif result.replayed:
        print_table(make_table(
            ("DEAD ID", "STREAM", "NEW ID"),
            [(r.dead_id, r.stream, r.new_id) for r in result.replayed],
        ))
    elif not result.failed:
        typer.echo(f"no dead-letter entries in {_where(result.dead_letter, result.dead_letters, stream)}")
    _report_failures(result.failed)
    if result.failed:
        raise typer.Exit(EXIT_FAILURE)


@dlq_app.command("purge", epilog="**Example:** `edged dlq purge edge:config --before 1700000000000-0 --yes`")
@exits
def purge(
    stream: StreamArg,
    ids: IdsOpt = None,
    before: Annotated[
        str | None,
        typer.Option(help="Delete only the entries older than this dead-letter id.",
                     show_default=False),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete.")] = False,
    dead_letter: DeadLetterOpt = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete dead-letter entries for good: all of them, the --id ones, or those --before an id.

    A sharded stream: in each of its shards' dead-letter streams.
    """
    from edged.admin import dlq

    if ids and before is not None:
        raise UsageError("give --id or --before, not both")
    for dead_id in ids or []:
        dlq.check_entry_id(dead_id, "--id")
    if before is not None:
        dlq.check_range_id(before, "--before")
    if not yes:
        what = (f"{len(ids)} selected entries" if ids
                else f"the entries before {before}" if before is not None else "every entry")
        raise UsageError(f"purge deletes {what} of {stream}'s dead-letter stream for good; "
                         "add --yes to do it")
    result = _run(config, url, stream, dead_letter, shard,
                  lambda client, dead: dlq.purge(client, dead, ids=ids or None, before=before),
                  lambda client, dls: dlq.purge_all(client, dls, ids=ids or None, before=before))
    where = _where(result.dead_letter, result.dead_letters, stream)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"deleted {result.deleted} entries from {where}")
    _report_failures([dlq.Failure(m, f"not in {where}" if result.dead_letter is None
                                  else f"not in dead-letter stream {result.dead_letter!r}")
                      for m in result.missing])
    if result.missing:
        raise typer.Exit(EXIT_FAILURE)
