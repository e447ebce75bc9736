"""``edged dlq``: look at, replay and purge a stream's dead-letter entries (library: dlq.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, TypeVar

import typer
from redis.asyncio import Redis

from edged.admin import dlq
from edged.cli.options import ConfigOpt, JsonOpt, UrlOpt, exits, run_once
from edged.cli.render import age, make_table, print_json, print_table
from edged.errors import EXIT_FAILURE, UsageError

dlq_app = typer.Typer(
    help="Dead-letter entries of a stream: list, show, replay to the stream, purge.",
    no_args_is_help=True,
)

T = TypeVar("T")

StreamArg = Annotated[str, typer.Argument(help="The stream whose dead letters to work on.")]
DeadLetterOpt = Annotated[
    str | None,
    typer.Option(
        "--dead-letter",
        help="Dead-letter stream [default: the stream's dead-letter setting in the config, "
        "else <STREAM>:dead].",
        show_default=False,
    ),
]
IdsOpt = Annotated[
    list[str] | None,
    typer.Option("--id", help="A dead-letter entry id (repeatable).", show_default=False),
]


def _run(
    config: ConfigOpt, url: UrlOpt, stream: str, dead_letter: str | None,
    action: Callable[[Redis, str], Awaitable[T]],
) -> T:
    """Resolve the connection and the dead-letter stream, then run ``action`` on one client."""
    return run_once(config, url, lambda client, cfg: action(
        client, dlq.dead_letter_stream(cfg, stream, dead_letter)))


# --------------------------------------------------------------------------- rendering


def _first_line(text: str | None, limit: int = 100) -> str | None:
    if text is None:
        return None
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _field_text(value: dlq.FieldValue) -> str:
    return value if isinstance(value, str) else f"(not UTF-8, base64) {value.base64}"


def _report_failures(failures: Sequence[dlq.Failure]) -> None:
    for failure in failures:
        typer.echo(f"edged: {failure.dead_id}: {failure.error}", err=True)


# --------------------------------------------------------------------------- commands


@dlq_app.command("list")
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
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List dead-letter entries, oldest first: reason, deliveries, where they came from."""
    if after is not None:
        dlq.check_range_id(after, "--after")
    page = _run(config, url, stream, dead_letter,
                lambda client, dead: dlq.list_dead(client, dead, count=count, after=after))
    if as_json:
        print_json(page)
        return
    if not page.entries:
        typer.echo(f"no dead-letter entries in {page.dead_letter}" + (f" after {after}" if after else ""))
        return
    print_table(make_table(
        ("DEAD ID", "STREAM", "GROUP", "ORIGINAL ID", "DELIVERIES", "CONSUMER", "FAILED AT", "AGE",
         "REASON"),
        [
            (e.dead_id, e.stream, e.group, e.original_id, e.deliveries, e.consumer, e.failed_at,
             age(e.age_seconds), _first_line(e.reason))
            for e in page.entries
        ],
    ))
    summary = f"{len(page.entries)} of {page.length} entries in {page.dead_letter}"
    if page.next_after is not None:
        summary += f"; next page: --after {page.next_after}"
    typer.echo(summary)


@dlq_app.command("show")
@exits
def show(
    stream: StreamArg,
    dead_id: Annotated[str, typer.Argument(help="The dead-letter entry id.")],
    dead_letter: DeadLetterOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one dead-letter entry in full: metadata, whole reason, original fields."""
    dlq.check_entry_id(dead_id, "DEAD_ID")
    entry = _run(config, url, stream, dead_letter,
                 lambda client, dead: dlq.show_dead(client, dead, dead_id))
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
    rows += [(f"field {name}", _field_text(value)) for name, value in entry.fields.items()]
    table = make_table(("", ""), rows)
    table.show_header = False
    print_table(table)


@dlq_app.command("replay")
@exits
def replay(
    stream: StreamArg,
    ids: IdsOpt = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every entry.")] = False,
    dead_letter: DeadLetterOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-publish entries to their original stream, original fields only, and remove them.

    Each entry is published and deleted from the dead-letter stream in one atomic step.
    Exit 1 if any id could not be replayed (the others are still replayed).
    """
    if bool(ids) == replay_all:
        raise UsageError("give the entries to replay with --id ID (repeatable), or --all")
    for dead_id in ids or []:
        dlq.check_entry_id(dead_id, "--id")
    result = _run(config, url, stream, dead_letter,
                  lambda client, dead: dlq.replay(client, dead, None if replay_all else ids))
    if as_json:
        print_json(result)
    elif result.replayed:
        print_table(make_table(
            ("DEAD ID", "STREAM", "NEW ID"),
            [(r.dead_id, r.stream, r.new_id) for r in result.replayed],
        ))
    elif not result.failed:
        typer.echo(f"no dead-letter entries in {result.dead_letter}")
    _report_failures(result.failed)
    if result.failed:
        raise typer.Exit(EXIT_FAILURE)


@dlq_app.command("purge")
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
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete dead-letter entries for good: all of them, the --id ones, or those --before an id."""
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
    result = _run(config, url, stream, dead_letter,
                  lambda client, dead: dlq.purge(client, dead, ids=ids or None, before=before))
    if as_json:
        print_json(result)
    else:
        typer.echo(f"deleted {result.deleted} entries from {result.dead_letter}")
    _report_failures([dlq.Failure(m, f"not in dead-letter stream {result.dead_letter!r}")
                      for m in result.missing])
    if result.missing:
        raise typer.Exit(EXIT_FAILURE)
