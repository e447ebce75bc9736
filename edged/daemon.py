"""The daemon's lifetime: connect, consume every configured stream, drain on a signal.

Shutdown, in order:
1. first SIGTERM/SIGINT: every stream stops reading and taking new entries;
2. running handlers get until ``shutdown-grace``; those still running then are cancelled and
   their entries stay pending (they may have had effects: a peer redelivers them later);
3. finished entries are acked, fetched-but-unstarted ones are handed back (released);
4. exit 0. A second signal cancels everything at once and exits 1.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field

import anyio
import anyio.abc
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edged import __version__
from edged.cleanup import remove_dead_consumers
from edged.config import Config
from edged.connection import TRANSIENT_ERRORS, Backoff, describe_target, make_client
from edged.consumer import StreamConsumer, use_raw_stream_replies
from edged.errors import EXIT_FAILURE
from edged.handlers import build_handler
from edged.health import HealthServer, ListenError
from edged.heartbeat import ConsumerNameTaken, Heartbeat
from edged.scripts import Scripts
from edged.systemd import notify, run_notifier, status_line

log = logging.getLogger("edged.daemon")


@dataclass
class Daemon:
    """Everything one running daemon owns; built from a checked config before any I/O."""

    config: Config
    url: str | None = None
    consumer: str = ""
    client: Redis | None = None
    streams: list[StreamConsumer] = field(default_factory=list)
    takeover: bool = False
    heartbeat: Heartbeat | None = None
    scripts: Scripts | None = None
    exit_code: int = 0
    failovers: int = 0
    forced: bool = False
    _stopping: bool = False
    _stopped: anyio.Event = field(default_factory=anyio.Event)

    @classmethod
    def build(cls, config: Config, url: str | None = None, takeover: bool = False) -> Daemon:
        """Resolve handlers and names; raises ConfigError (exit 78) before touching Redis."""
        daemon = cls(
            config=config, url=url, consumer=config.daemon.consumer_name(), takeover=takeover
        )
        handlers = [build_handler(s, i) for i, s in enumerate(config.streams)]
        block = config.daemon.read_block.seconds
        # The socket timeout must outlast a blocking read, or redis-py would retry it underneath.
        client = make_client(
            config.redis, url=url, socket_timeout=block + 10, client_name=f"edged:{daemon.consumer}"
        )
        use_raw_stream_replies(client)
        scripts = Scripts(client)
        daemon.client = client
        daemon.scripts = scripts
        daemon.streams = [
            StreamConsumer(client, scripts, s, daemon.consumer, h, read_block=block)
            for s, h in zip(config.streams, handlers, strict=True)
        ]
        daemon.heartbeat = Heartbeat(
            scripts, config.daemon.key_prefix, daemon.consumer,
            config.daemon.heartbeat_interval.seconds,
            [f"{s.stream}/{s.group}" for s in config.streams], daemon.status_fields,
        )
        return daemon

    def status_fields(self) -> dict[str, str]:
        """Live counts for the heartbeat record (read by `edged status`)."""
        stats = [s.stats for s in self.streams]
        return {
            "ready": "1" if all(s.ready.is_set() and s.connected for s in self.streams) else "0",
            "in-flight": str(sum(s.in_flight for s in stats)),
            "processed": str(sum(s.processed for s in stats)),
            "failed": str(sum(s.failed + s.retried for s in stats)),
            "dead-lettered": str(sum(s.dead_lettered for s in stats)),
        }

    def stop(self) -> None:
        """Begin the drain (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        self._stopped.set()
        notify("STOPPING=1", "STATUS=" + status_line(self, stopping=True))
        deadline = anyio.current_time() + self.config.daemon.shutdown_grace.seconds
        for s in self.streams:
            s.stop(deadline)

    async def run(self) -> int:
        """Run until stopped by a signal; returns the exit code."""
        assert self.client is not None and self.heartbeat is not None
        health = HealthServer.configured(self, lambda: self._stopping)  # None when listen = ""
        if health is not None:
            try:
                await health.bind()  # before any Redis I/O: a taken port stops us here
            except ListenError as exc:
                log.error("%s", exc)
                return EXIT_FAILURE
        async with anyio.create_task_group() as root:
            root.start_soon(self._watch_signals, root.cancel_scope)
            # Both start before Redis is reached: /readyz says why we are not ready, and the
            # watchdog is fed while we wait for Redis (waiting is not being wedged).
            if health is not None:
                root.start_soon(health.serve)
            root.start_soon(run_notifier, self, lambda: self._stopping)
            await self._log_server_summary()
            if not await self._claim_name():
                root.cancel_scope.cancel()
                return self.exit_code
            if health is not None:
                root.start_soon(health.sampler.run)
            root.start_soon(self.heartbeat.run, self._superseded)
            self._watch_failovers(root)
            root.start_soon(self._cleanup_loop)
            root.start_soon(self._announce_ready)
            async with anyio.create_task_group() as consumers:
                for s in self.streams:
                    consumers.start_soon(s.run)
            await self.heartbeat.end()
            root.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.client.aclose()
        total = sum(s.stats.processed for s in self.streams)
        log.info("stopped; %d entries processed", total)
        return 1 if self.forced else self.exit_code

    def _watch_failovers(self, root: anyio.abc.TaskGroup) -> None:
        """Under Sentinel: follow +switch-master at once, and check the primary's role."""
        sentinel = self.config.redis.sentinel
        if sentinel is None or self.url is not None or self.client is None:
            return
        from edged.sentinel import FailoverWatch

        watch = FailoverWatch(sentinel, self.client, self._switched)
        root.start_soon(watch.follow_announcements)
        root.start_soon(watch.check_role)

    async def _switched(self, primary: str) -> None:
        """Sentinel announced a new primary: drop every connection to the old one now."""
        assert self.client is not None
        self.failovers += 1
        log.warning("failover: the primary is now %s; reconnecting", primary)
        await self.client.connection_pool.disconnect()
        for stream in self.streams:
            stream.retry_now()

    async def _claim_name(self) -> bool:
        """Hold the consumer name before consuming anything; False if another daemon has it."""
        assert self.heartbeat is not None
        backoff = Backoff()
        while not self._stopping:
            try:
                await self.heartbeat.claim(self.takeover)
                return True
            except ConsumerNameTaken as exc:
                log.error("%s", exc)
                self.exit_code = 1
                return False
            except RedisError as exc:  # e.g. NOPERM: say so, keep trying
                delay = backoff.next_delay()
                log.warning("cannot record heartbeat (%s); retrying in %.1fs", exc, delay)
                with anyio.move_on_after(delay):
                    await self._stopped.wait()
        return False

    def _superseded(self, why: str) -> None:
        log.error("stopping: %s", why.replace("is held by", "was taken over by"))
        self.exit_code = 1
        self.stop()

    async def _cleanup_loop(self) -> None:
        """Remove dead consumers that own nothing, every quarter of consumer-expiry (<= 1 min)."""
        assert self.client is not None and self.scripts is not None
        expiry = self.config.daemon.consumer_expiry
        interval = min(60.0, max(0.5, expiry.seconds / 4))
        while True:
            await anyio.sleep(interval)
            for s in self.streams:
                await remove_dead_consumers(
                    self.client, self.scripts, self.config.daemon.key_prefix, s.stream, s.group,
                    self.consumer, expiry.ms,
                )

    async def _watch_signals(self, root: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self._stopping:
                    log.info(
                        "%s: draining (grace %s); a second signal stops at once",
                        name, self.config.daemon.shutdown_grace,
                    )
                    self.stop()
                else:
                    log.warning("%s again: stopping now; running entries stay pending", name)
                    self.forced = True
                    root.cancel()
                    return

    async def _announce_ready(self) -> None:
        for s in self.streams:
            await s.ready.wait()
        names = ", ".join(f"{s.stream} ({s.group}, x{s.cfg.concurrency})" for s in self.streams)
        log.info("ready: consumer %s reading %s", self.consumer, names or "no streams")
        notify("READY=1", "STATUS=" + status_line(self, self._stopping))

    async def _log_server_summary(self) -> None:
        """One line at start: who we are, where Redis is, what it runs. Waits for Redis."""
        assert self.client is not None
        target = describe_target(self.config.redis, self.url)
        backoff = Backoff()
        while not self._stopping:
            try:
                info = await self.client.info("server")
                role = (await self.client.info("replication")).get("role", "?")
                break
            except TRANSIENT_ERRORS as exc:
                delay = backoff.next_delay()
                log.warning("Redis at %s unavailable (%s); retrying in %.1fs", target, exc, delay)
                with anyio.move_on_after(delay):
                    await self._stopped.wait()
        else:
            return
        server = "valkey " + info["valkey_version"] if "valkey_version" in info else (
            "redis " + str(info.get("redis_version", "?"))
        )
        log.info(
            "edged %s pid %d consumer %s: %s at %s, role %s, %d stream(s)",
            __version__, os.getpid(), self.consumer, server, target, role, len(self.streams),
        )
