"""The history checker: from what the ledger recorded and what Redis holds at the end, count
lost entries, duplicate runs, entries left pending, dead letters and daemons that exited by
themselves. Pure functions over plain records, so they can be tested without any process.

Records (as the ledger stores them, one string each):

- acknowledged publish: ``"<stream> <id> <seq>"`` (the server answered the XADD; under
  Sentinel and on a cluster only once ``WAIT 1`` returned >= 1);
- unacknowledged publish: ``"<stream> <id or -> <seq> <why>"`` (nothing is promised for it);
- handler run: ``"<stream> <id> <consumer> <delivery> <seq>"`` (written when the handler
  finished, so a run that was killed or cancelled half-way is not one);
- injected loss: ``"<stream> <id> <seq>"`` (XACKed behind edged's back by ``--inject-loss``).

``<stream>`` is always the physical stream: for a sharded logical stream (``--cluster``) the
shard the entry went to (``<stream>:<i>:<k>``), which is also what handlers see as
``Event.stream``. An optional map from physical to logical streams only groups the figures.

An entry is keyed by ``(stream, id, seq)``: under Sentinel a write the paused old primary
accepted can carry the same id as a real entry on the new primary, and the seq tells them apart.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

Key = tuple[str, str, int]  # (stream, id, seq)


@dataclass
class Run:
    stream: str
    id: str
    consumer: str
    delivery: int
    seq: int

    @property
    def key(self) -> Key:
        return (self.stream, self.id, self.seq)

    @classmethod
    def parse(cls, raw: str) -> Run:
        stream, entry_id, consumer, delivery, seq = raw.split()
        return cls(stream, entry_id, consumer, int(delivery), int(seq))

    def format(self) -> str:
        return f"{self.stream} {self.id} {self.consumer} {self.delivery} {self.seq}"


@dataclass
class DeadLetter:
    stream: str
    id: str
    seq: int | None
    reason: str
    deliveries: str

    @property
    def key(self) -> Key | None:
        return None if self.seq is None else (self.stream, self.id, self.seq)


@dataclass
class SelfExit:
    """A daemon process whose exit the harness did not cause."""

    name: str
    pid: int
    returncode: int
    at: float  # seconds since the start of the run
    log_path: str
    log_tail: str


def parse_key(raw: str) -> Key:
    stream, entry_id, seq = raw.split()[:3]
    return (stream, entry_id, int(seq))


@dataclass
class Report:
    seed: int
    published: int
    unacknowledged: int
    unacknowledged_run: int
    runs: int
    lost: list[Key]
    lost_injected: int
    injected: int
    duplicates: int  # runs beyond the first, over all entries
    entries_run_more_than_once: int
    most_runs: int
    most_runs_entry: Key | None
    unknown_runs: int  # runs of an entry the producer never wrote (should stay 0)
    pending_left: int
    undelivered_left: int
    pending_sample: list[str]
    dead_lettered: int
    dead_reasons: dict[str, int]
    self_exits: list[SelfExit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # harness-level: drain timeout, hangs
    faults_played: dict[str, int] = field(default_factory=dict)
    faults_skipped: dict[str, int] = field(default_factory=dict)
    # logical stream -> [physical streams, acknowledged publishes, handler runs, lost]
    per_stream: dict[str, list[int]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return (not self.lost and not self.self_exits and self.pending_left == 0
                and self.undelivered_left == 0)

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def to_json(self) -> str:
        data = asdict(self)
        data["lost"] = [list(k) for k in self.lost]
        data["lost_count"] = len(self.lost)
        data["self_exit_count"] = len(self.self_exits)
        data["clean"] = self.clean
        return json.dumps(data, indent=2)

    def summary(self) -> str:
        lost_note = f" ({self.lost_injected} of them injected)" if self.injected else ""
        most = (f" ({self.most_runs_entry[0]} {self.most_runs_entry[1]})"
                if self.most_runs > 1 and self.most_runs_entry else "")
        lines = [
            "=" * 72,
            f"history checker summary   seed {self.seed}   {'CLEAN' if self.clean else 'FAILED'}",
            "-" * 72,
            f"published (acknowledged)       {self.published}",
            f"publishes not acknowledged     {self.unacknowledged} "
            f"({self.unacknowledged_run} of them ran anyway)",
            f"handler runs                   {self.runs}",
            f"lost                           {len(self.lost)}{lost_note}",
            f"injected losses                {self.injected}",
            f"duplicate runs                 {self.duplicates} "
            f"({self.entries_run_more_than_once} entries ran more than once)",
            f"most runs of one entry         {self.most_runs}{most}",
            f"runs of unknown entries        {self.unknown_runs}",
            f"pending left                   {self.pending_left}",
            f"undelivered left               {self.undelivered_left}",
            f"dead-lettered                  {self.dead_lettered}",
        ]
        lines += [f"    {n} x {reason}" for reason, n in sorted(self.dead_reasons.items())]
        for name, (shards, acked, ran, lost) in sorted(self.per_stream.items()):
            lines.append(f"    {name}{f' ({shards} shards)' if shards > 1 else ''}: "
                         f"{acked} acknowledged, {ran} runs, {lost} lost")
        if self.faults_played or self.faults_skipped:
            lines.append(f"faults played                  {sum(self.faults_played.values())} ("
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.faults_played.items()))
                         + f"); skipped {sum(self.faults_skipped.values())}")
        lines.append(f"daemons that exited by themselves  {len(self.self_exits)}")
        for s in self.self_exits:
            lines.append(f"    {s.name} pid {s.pid} exit {s.returncode} at {s.at:.1f}s "
                         f"(log {s.log_path})")
        if self.lost:
            lines.append("lost entries (first 20): " + ", ".join(
                f"{s} {i} seq {q}" for s, i, q in self.lost[:20]))
        if self.pending_sample:
            lines.append("pending left (first 10): " + "; ".join(self.pending_sample[:10]))
        for p in self.problems:
            lines.append(f"problem: {p}")
        lines.append(f"replay: python -m tests.chaos --seed {self.seed} ...   exit {self.exit_code}")
        lines.append("=" * 72)
        return "\n".join(lines)


def check(
    *,
    seed: int,
    published: Iterable[str],
    unacknowledged: Iterable[str],
    runs: Iterable[str],
    injected: Iterable[str],
    dead: Iterable[DeadLetter],
    pending_left: int,
    undelivered_left: int = 0,
    pending_sample: list[str] | None = None,
    self_exits: list[SelfExit] | None = None,
    problems: list[str] | None = None,
    faults_played: dict[str, int] | None = None,
    faults_skipped: dict[str, int] | None = None,
    logical: dict[str, str] | None = None,
) -> Report:
    acked_set = {parse_key(p) for p in published}
    unacked_raw = list(unacknowledged)
    # An unacknowledged publish may still have reached the stream (the reply was lost): its
    # id may be unknown ("-"), so it is matched by (stream, seq).
    unacked = {(u.split()[0], int(u.split()[2])) for u in unacked_raw}
    run_list = [Run.parse(r) for r in runs]
    per_entry = Counter(r.key for r in run_list)
    dead_list = list(dead)
    dead_keys = {d.key for d in dead_list if d.key is not None}
    stolen = {parse_key(i) for i in injected}

    lost = sorted(k for k in acked_set if k not in per_entry and k not in dead_keys)
    ran = {(k[0], k[2]) for k in per_entry}
    known = {(k[0], k[2]) for k in acked_set} | unacked
    most_key, most = (per_entry.most_common(1)[0] if per_entry else (None, 0))
    per_stream: dict[str, list[int]] = {}
    if logical:
        for name in logical.values():
            per_stream[name] = [sum(1 for v in logical.values() if v == name), 0, 0, 0]
        for figure, keys in ((1, acked_set), (2, [r.key for r in run_list]), (3, lost)):
            for key in keys:
                name = logical.get(key[0], key[0])
                per_stream.setdefault(name, [1, 0, 0, 0])[figure] += 1
    return Report(
        seed=seed,
        published=len(acked_set),
        unacknowledged=len(unacked_raw),
        unacknowledged_run=len(unacked & ran),
        runs=len(run_list),
        lost=lost,
        lost_injected=sum(1 for k in lost if k in stolen),
        injected=len(stolen),
        duplicates=sum(n - 1 for n in per_entry.values() if n > 1),
        entries_run_more_than_once=sum(1 for n in per_entry.values() if n > 1),
        most_runs=most,
        most_runs_entry=most_key,
        unknown_runs=sum(n for k, n in per_entry.items() if (k[0], k[2]) not in known),
        pending_left=pending_left,
        undelivered_left=undelivered_left,
        pending_sample=list(pending_sample or []),
        dead_lettered=len(dead_list),
        dead_reasons=dict(Counter(_reason_kind(d.reason) for d in dead_list)),
        self_exits=list(self_exits or []),
        problems=list(problems or []),
        faults_played=dict(faults_played or {}),
        faults_skipped=dict(faults_skipped or {}),
        per_stream=per_stream,
    )


def _reason_kind(reason: str) -> str:
    """A dead-letter reason without the ids and numbers that make every one unique."""
    return reason.strip().splitlines()[0][:120] if reason.strip() else "(no reason)"
