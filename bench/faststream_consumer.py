"""FastStream's Redis consumer-group subscriber with a no-op handler.

``python -m bench.faststream_consumer --url ... --stream ... --group ... --mode batch``.
Modes (all ack every entry, so the group ends with nothing pending):

* ``batch``: ``StreamSub(batch=True, max_records=COUNT)``, one handler call and one XACK per
  XREADGROUP batch. The fastest acking mode, hence the harness's default.
* ``single``: ``StreamSub(max_records=COUNT)``, one handler call and one XACK per entry.
* ``concurrent``: ``single`` with ``max_workers=16`` handler tasks.

Every mode runs with FastStream's fastest broker options: ``logger=None`` (no two log lines
per message) and ``apply_types=False`` (no FastDepends call wrapping per message).
"""

from __future__ import annotations

import argparse
from typing import Any

MODES: dict[str, str] = {
    "batch": "batch=True, max_records={count}",
    "single": "batch=False, max_records={count}",
    "concurrent": "batch=False, max_records={count}, max_workers=16",
}
CONCURRENT_WORKERS = 16


def describe(mode: str, count: int) -> str:
    return MODES[mode].format(count=count)


def build_app(args: argparse.Namespace) -> Any:
    # Imported here so the harness can read MODES/describe without loading FastStream.
    from faststream import AckPolicy, FastStream
    from faststream.redis import RedisBroker, StreamSub

    # logger=None: no per-message log lines; apply_types=False: no FastDepends argument
    # validation per call (the handler ignores its argument). Each is worth ~25-35 % here.
    broker = RedisBroker(args.url, logger=None, apply_types=False)  # type: ignore[arg-type]
    stream = StreamSub(
        args.stream,
        group=args.group,
        consumer=args.consumer,
        batch=args.mode == "batch",
        max_records=args.count,
        polling_interval=1000,
    )
    # AckPolicy.ACK: XACK once the handler returns (for a batch, one XACK with all its ids).
    subscriber = broker.subscriber(
        stream=stream,
        ack_policy=AckPolicy.ACK,
        max_workers=CONCURRENT_WORKERS if args.mode == "concurrent" else None,
    )

    async def noop(body: Any) -> None:
        return None

    subscriber(noop)
    return FastStream(broker, logger=None)


def main() -> None:
    import anyio

    parser = argparse.ArgumentParser(prog="python -m bench.faststream_consumer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--consumer", default="bench-1")
    parser.add_argument("--mode", choices=sorted(MODES), default="batch")
    parser.add_argument("--count", type=int, default=500)
    app = build_app(parser.parse_args())
    # FastStream.run handles SIGTERM itself and stops the broker cleanly.
    anyio.run(app.run)


if __name__ == "__main__":
    main()
