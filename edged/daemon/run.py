"""The daemon's lifetime: connect, consume every configured stream, drain on a signal.

Task groups are nested by lifetime: the root holds signals, HTTP, systemd notifications,
heartbeat, failover watch, clean-up and sampling; inside it the consumers. Shutdown, in order:

1. first SIGTERM/SIGINT: ``stop`` sets the stop event; every stream stops reading and taking
   new entries;
2. running handlers get until ``shutdown-grace`` (the deadline is set on the scope they run
   in); those still running then are cancelled and their entries stay pending (they may have
   had effects: a peer redelivers them later);
3. the clean-up phase, bounded by ``shutdown.CLEANUP_BUDGET``: finished entries are acked,
   fetched-but-unstarted ones and waiting retries are handed back, the heartbeat record ends;
4. one summary line; exit 0. A second signal cancels everything at once and exits 1.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from redis.exceptions import RedisError

from edged import __version__
from edged.backoff import Backoff
from edged.config import Config
from edged.connect.client import describe_target, describe_user, make_client
from edged.connect.transient import AUTH_ERRORS, TRANSIENT_ERRORS
from edged.consume.consumer import StreamConsumer
from edged.consume.reader import use_raw_stream_replies
from edged.consume.slots import Slots
from edged.daemon.cleanup import remove_dead_consumers
from edged.daemon.heartbeat import ConsumerNameTaken, Heartbeat
from edged.daemon.pause import PauseWatch
from edged.daemon.status import DaemonStatus, snapshot
from edged.daemon.supervise import keep_running
from edged.daemon.systemd import notify, run_notifier
from edged.daemon.trim import Trimmer
from edged.errors import EXIT_FAILURE
from edged.handlers import HandlerCall, build_handler, use_handler_path
from edged.layout import expand, is_cluster, key_prefix, trim_targets
from edged.scripts import Scripts
from edged.shutdown import END_HEARTBEAT, OUTBOX_SETTLE

# The HTTP server and its metrics (prometheus_client, http.server) and the outbox (sqlite3) are
# imported only by a daemon whose config has them ([daemon] listen, [outbox]): a daemon without
# them does not carry them in memory (issue 14, idle footprint).
if TYPE_CHECKING:
    from edged.daemon.http import HealthServer
    from edged.daemon.metrics import GroupSampler
    from edged.outbox.service import Outbox

log = logging.getLogger("edged.daemon")


class Daemon:
    """Everything one running daemon owns; built from a checked config before any I/O."""

    def __init__(self, config: Config, url: str | None = None, takeover: bool = False) -> None:
        """Resolve handlers and names; raises ConfigError (exit 78) before touching Redis."""
        self.config = config
        self.url = url
        self.takeover = takeover
        self.consumer = consumer = config.daemon.consumer_name()
        use_handler_path(config.daemon.handler_path)
        handlers = [build_handler(s, i) for i, s in enumerate(config.streams)]
        block = config.daemon.read_block.seconds
        # The socket timeout must outlast a blocking read, or redis-py would retry it underneath.
        self.client = make_client(
            config.redis, url=url, socket_timeout=block + 10, client_name=f"edged:{consumer}"
        )
        use_raw_stream_replies(self.client)
        self.scripts = Scripts(self.client)
        self.streams = self._consumers(handlers, block)
        claims = {f"{s.stream}/{s.group}": (s.cfg.claim_idle.ms, s.cfg.claim_interval.ms)
                  for s in self.streams}
        self.heartbeat = Heartbeat(
            self.scripts, key_prefix(config), consumer,
            config.daemon.heartbeat_interval.seconds, claims,
            lambda: self.status().heartbeat_fields(),
        )
        self.stop_requested = anyio.Event()
        self.exit_code = 0
        self.failovers = 0
        self.forced = False
        # Redis refused our user (wrong password, ACL): reported as such, not as an outage.
        self.access_problem: str | None = None
        # Safe retention: the streams with retention or max-len (and their dead-letter streams).
        targets = trim_targets(config)
        self._trimmer = (Trimmer(self.client, self.scripts, key_prefix(config), consumer, targets)
                         if targets else None)
        self.outbox = self._open_outbox()
        # Group gauges for /metrics, sampled from Redis only when HTTP is on.
        self._sampler = self._group_sampler() if config.daemon.listen else None

    def _group_sampler(self) -> GroupSampler:
        from edged.daemon.metrics import GroupSampler  # only with HTTP on: see the imports

        return GroupSampler(self.client, [(s.stream, s.group) for s in self.streams],
                            dead_letters={s.stream: s.cfg.dead_letter_stream
                                          for s in self.streams})

    def _open_outbox(self) -> Outbox | None:
        """The outbox, opened and checked: a damaged or foreign file raises OutboxUnusable
        (exit 78) here, before anything is consumed."""
        cfg = self.config.outbox
        if cfg is None:
            return None
        from edged.outbox.service import Outbox  # only with [outbox]: see the imports

        shards = {s.stream: s.shards for s in self.config.streams if s.shards > 1}
        outbox = Outbox(cfg, {**shards, **cfg.shards})
        outbox.open()
        return outbox

    def _consumers(self, handlers: list[HandlerCall], block: float) -> list[StreamConsumer]:
        """One consumer per physical stream; the shards of a logical stream share its handler
        and its slots (``concurrency`` bounds the logical stream)."""
        cluster = is_cluster(self.config)
        consumers = []
        for s, handler in zip(self.config.streams, handlers, strict=True):
            slots = Slots(s.concurrency, readers=s.shards)
            consumers += [StreamConsumer(self.client, self.scripts, p.cfg, self.consumer, handler,
                                         read_block=block, slots=slots, logical=p.logical,
                                         shard=p.index)
                          for p in expand(s, cluster)]
        return consumers

    @property
    def stopping(self) -> bool:
        return self.stop_requested.is_set()

    def status(self) -> DaemonStatus:
        """The one status every observer reads (see status.py)."""
        return snapshot(self.consumer, self.streams, stopping=self.stopping,
                        failovers=self.failovers, read_block=self.config.daemon.read_block.seconds,
                        outbox=None if self.outbox is None else self.outbox.depth.entries,
                        access=self.access_problem)

    def stop(self) -> None:
        """Begin the drain (idempotent)."""
        if self.stopping:
            return
        self.stop_requested.set()
        notify("STOPPING=1", "STATUS=" + self.status().line())
        deadline = anyio.current_time() + self.config.daemon.shutdown_grace.seconds
        for s in self.streams:
            s.stop(deadline)

    async def run(self) -> int:
        """Run until stopped by a signal; returns the exit code."""
        health = self._http_server()
        if health is not None:
            from edged.daemon.http import ListenError

            try:
                await health.bind()  # before any Redis I/O: a taken port stops us here
            except ListenError as exc:
                log.error("%s", exc)
                self._close_outbox()
                return EXIT_FAILURE
        try:
            return await self._run(health)
        finally:
            self._close_outbox()

    def _close_outbox(self) -> None:
        if self.outbox is not None:
            self.outbox.close()

    async def _run(self, health: HealthServer | None) -> int:
        async with anyio.create_task_group() as root:
            root.start_soon(self._watch_signals, root.cancel_scope)
            # Both start before Redis is reached: /readyz says why we are not ready, and the
            # watchdog is fed while we wait for Redis (waiting is not being wedged).
            if health is not None:
                root.start_soon(health.serve)
            if self.outbox is not None:  # publishes are taken and kept while Redis is away
                root.start_soon(keep_running, "outbox writer", self.outbox.run_writer)
                root.start_soon(keep_running, "outbox forwarder",
                                functools.partial(self.outbox.run_forwarder, self.client))
            root.start_soon(keep_running, "systemd notifier",
                            functools.partial(run_notifier, self._notifier_look))
            await self._log_server_summary()
            if not await self._claim_name():
                root.cancel_scope.cancel()
                return self.exit_code
            self._start_background(root)
            async with anyio.create_task_group() as consumers:
                for s in self.streams:
                    consumers.start_soon(s.run)
                if not self.streams:  # an outbox alone: forward until told to stop
                    consumers.start_soon(self.stop_requested.wait)
            if self.outbox is not None:
                with anyio.move_on_after(OUTBOX_SETTLE, shield=True):
                    await self.outbox.settle()
            with anyio.move_on_after(END_HEARTBEAT, shield=True):
                await self.heartbeat.end()
            root.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.client.aclose()
        log.info("stopped: %s", self.status().summary())
        return 1 if self.forced else self.exit_code

    def _http_server(self) -> HealthServer | None:
        """The server for ``[daemon] listen`` and the outbox socket; None when neither is on."""
        listen = self.config.daemon.listen
        outbox = self.outbox
        if not listen and outbox is None:
            return None
        # Only with HTTP or an outbox: see the imports.
        from edged.daemon.http import HealthServer, PublishSocket
        from edged.daemon.metrics import make_registry

        registry = make_registry(self.status, self._sampler,
                                 self._trimmer.states if self._trimmer else None)
        if outbox is None:
            return HealthServer(listen, self.status, registry)
        from edged.outbox.metrics import OutboxCollector
        from edged.outbox.route import publish_request

        registry.register(OutboxCollector(outbox))
        socket = outbox.cfg.socket
        return HealthServer(
            listen, self.status, registry,
            publisher=functools.partial(publish_request, outbox),
            publish_on_listen=outbox.cfg.http,
            publish_socket=PublishSocket(socket, outbox.cfg.mode_bits()) if socket else None,
        )

    def _notifier_look(self) -> tuple[bool, str]:
        status = self.status()
        return status.alive, status.line()

    def _start_background(self, root: anyio.abc.TaskGroup) -> None:
        """The loops that run beside the consumers, once the consumer name is ours."""
        if self._sampler is not None:
            root.start_soon(keep_running, "group sampler", self._sampler.run)
        root.start_soon(keep_running, "heartbeat",
                        functools.partial(self.heartbeat.run, self._superseded))
        self._watch_failovers(root)
        root.start_soon(keep_running, "dead-consumer clean-up", self._cleanup_loop)
        root.start_soon(keep_running, "pause watch", PauseWatch(
            self.client, key_prefix(self.config), self.streams,
            self.config.daemon.heartbeat_interval.seconds).run)
        if self._trimmer is not None:
            root.start_soon(keep_running, "retention", self._trimmer.run)
        root.start_soon(self._announce_ready)

    def _watch_failovers(self, root: anyio.abc.TaskGroup) -> None:
        """Under Sentinel: follow +switch-master at once, and check the primary's role."""
        sentinel = self.config.redis.sentinel
        if sentinel is None or self.url is not None:
            return
        from edged.connect.sentinel import FailoverWatch

        watch = FailoverWatch(sentinel, self.client, self._switched)
        root.start_soon(keep_running, "sentinel announcements", watch.follow_announcements)
        root.start_soon(keep_running, "primary role check", watch.check_role)

    async def _switched(self, primary: str) -> None:
        """Sentinel announced a new primary: drop every connection to the old one now."""
        self.failovers += 1
        log.warning("failover: the primary is now %s; reconnecting", primary)
        await self.client.connection_pool.disconnect()
        for stream in self.streams:
            stream.retry_now()

    async def _claim_name(self) -> bool:
        """Hold the consumer name before consuming anything; False if another daemon has it."""
        backoff = Backoff()
        while not self.stopping:
            try:
                await self.heartbeat.claim(self.takeover)
                self.access_problem = None
                return True
            except ConsumerNameTaken as exc:
                log.error("%s", exc)
                self.exit_code = 1
                return False
            except (*TRANSIENT_ERRORS, RedisError) as exc:  # e.g. NOPERM: say so, keep trying
                delay = backoff.next_delay()
                if not self._access_refused(exc, delay):
                    log.warning("cannot record heartbeat (%s); retrying in %.1fs", exc, delay)
                with anyio.move_on_after(delay):
                    await self.stop_requested.wait()
        return False

    def _access_refused(self, exc: BaseException, delay: float) -> bool:
        """Log a refused login or command at ERROR, and keep it for /readyz, /healthz,
        STATUS= and `edged check`; False if ``exc`` is something else."""
        if not isinstance(exc, AUTH_ERRORS):
            return False
        user = describe_user(self.config.redis, self.url)
        self.access_problem = f"Redis refused user {user}: {exc}"
        log.error("%s; retrying in %.1fs (fix [redis] username or password-file, or the user's "
                  "ACL: the password file is read again for every connection)",
                  self.access_problem, delay)
        return True

    def _superseded(self, why: str) -> None:
        log.error("stopping: %s", why.replace("is held by", "was taken over by"))
        self.exit_code = 1
        self.stop()

    async def _cleanup_loop(self) -> None:
        """Remove dead consumers that own nothing, every quarter of consumer-expiry (<= 1 min)."""
        expiry = self.config.daemon.consumer_expiry
        interval = min(60.0, max(0.5, expiry.seconds / 4))
        while True:
            await anyio.sleep(interval)
            for s in self.streams:
                try:
                    await remove_dead_consumers(
                        self.client, self.scripts, key_prefix(self.config), s.stream,
                        s.group, self.consumer, expiry.ms,
                    )
                except (*TRANSIENT_ERRORS, RedisError) as exc:  # Redis away: next tick
                    log.warning("stream %s: dead-consumer clean-up skipped (%s)", s.stream, exc)

    async def _watch_signals(self, root: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.stopping:
                    log.info("%s: draining (grace %s); a second signal stops at once",
                             name, self.config.daemon.shutdown_grace)
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
        notify("READY=1", "STATUS=" + self.status().line())

    async def _log_server_summary(self) -> None:
        """One line at start: who we are, where Redis is, what it runs. Waits for Redis."""
        target = describe_target(self.config.redis, self.url)
        backoff = Backoff()
        while not self.stopping:
            try:
                info = await self.client.info("server")
                if is_cluster(self.config):  # INFO answers for one node; all are primaries' peers
                    role = "cluster node"
                else:
                    role = (await self.client.info("replication")).get("role", "?")
                break
            except TRANSIENT_ERRORS as exc:
                delay = backoff.next_delay()
                if not self._access_refused(exc, delay):
                    log.warning("Redis at %s unavailable (%s); retrying in %.1fs", target, exc,
                                delay)
                with anyio.move_on_after(delay):
                    await self.stop_requested.wait()
            except RedisError as exc:  # e.g. an ACL user without INFO: the summary is optional
                log.info("edged %s pid %d consumer %s: server at %s (not described: %s), "
                         "%d stream(s)", __version__, os.getpid(), self.consumer, target, exc,
                         len(self.streams))
                return
        else:
            return
        server = "valkey " + info["valkey_version"] if "valkey_version" in info else (
            "redis " + str(info.get("redis_version", "?"))
        )
        log.info(
            "edged %s pid %d consumer %s: %s at %s, role %s, %d stream(s)",
            __version__, os.getpid(), self.consumer, server, target, role, len(self.streams),
        )
