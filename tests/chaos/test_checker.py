"""The history checker checks itself: its verdict logic on made-up records, its fault plan,
and two short real histories (about 20 s of faults each, as `python -m tests.chaos`
subprocesses): one with losses injected behind edged's back, which it must report exactly
and fail on, and a clean one, which must pass with nothing lost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.checker import DeadLetter, SelfExit, check
from tests.chaos.harness import plan
from tests.support import REPO
from tests.support import test_env as edged_env

SHORT = 20  # seconds of faults in the real histories below


def test_check_counts_lost_duplicate_dead_and_unknown() -> None:
    report = check(
        seed=5,
        published=["s 1-0 1", "s 2-0 2", "s 3-0 3", "t 1-0 4", "t 2-0 5"],
        unacknowledged=["s - 6 ConnectionError", "t 3-0 7 not-replicated"],
        runs=["s 1-0 a 1 1", "s 1-0 b 2 1", "s 1-0 c 3 1", "s 2-0 a 1 2",
              "t 1-0 a 1 4", "s 9-0 a 1 6", "t 3-0 b 1 7",
              "t 2-0 a 1 99"],  # same id as an acknowledged entry, another body: not it
        injected=["s 3-0 3"],
        dead=[DeadLetter("t", "2-0", 5, "max-deliveries exceeded; last error: boom", "100")],
        pending_left=0,
    )
    assert report.lost == [("s", "3-0", 3)]
    assert report.lost_injected == 1 and report.injected == 1
    assert report.duplicates == 2 and report.entries_run_more_than_once == 1
    assert report.most_runs == 3 and report.most_runs_entry == ("s", "1-0", 1)
    assert report.dead_lettered == 1
    assert report.dead_reasons == {"max-deliveries exceeded; last error: boom": 1}
    assert report.unacknowledged == 2 and report.unacknowledged_run == 2
    assert report.unknown_runs == 1
    assert report.exit_code == 1
    assert "lost                           1 (1 of them injected)" in report.summary()


def test_check_is_clean_only_without_loss_self_exit_or_pending() -> None:
    base: dict[str, Any] = dict(seed=1, published=["s 1-0 1"], unacknowledged=[],
                                runs=["s 1-0 a 1 1"], injected=[], dead=[])
    assert check(**base, pending_left=0).exit_code == 0
    assert check(**base, pending_left=1).exit_code == 1
    assert check(**base, pending_left=0, undelivered_left=2).exit_code == 1
    died = SelfExit("d0", 1, 1, 3.0, "d0.log", "Traceback ...")
    assert check(**base, pending_left=0, self_exits=[died]).exit_code == 1
    dead_only = dict(base, runs=[], dead=[DeadLetter("s", "1-0", 1, "rejected", "1")])
    assert check(**dead_only, pending_left=0).exit_code == 0


def test_plan_is_a_function_of_the_seed() -> None:
    assert plan(7, 120, False) == plan(7, 120, False)
    assert plan(7, 120, False) != plan(8, 120, False)
    kinds = {f.kind for f in plan(7, 600, True)}
    assert {"primary-kill", "primary-stop"} <= kinds
    assert not kinds & {"server-kill", "server-term"}
    assert all(f.at < 120 for f in plan(7, 120, False))


def run_history(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    summary = tmp_path / "summary-out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--duration", str(SHORT), "--workdir",
         str(tmp_path / "run"), "--summary-json", str(summary), "--settle-timeout", "25", *args],
        capture_output=True, text=True, env=edged_env(), cwd=REPO, timeout=100,
    )
    out = proc.stdout + proc.stderr
    assert summary.exists(), f"no summary (exit {proc.returncode}):\n{out[-6000:]}"
    return proc.returncode, json.loads(summary.read_text()), out


@pytest.mark.slow
def test_injected_losses_are_reported_exactly(tmp_path: Path) -> None:
    code, report, out = run_history(tmp_path, "--seed", "11", "--inject-loss", "3")
    print(out)
    assert report["injected"] == 3, out[-6000:]
    assert report["lost_count"] == 3, out[-6000:]
    assert report["lost_injected"] == 3, out[-6000:]
    assert report["self_exit_count"] == 0, out[-6000:]
    assert code == 1, out[-6000:]
    assert "FAILED" in out and "lost                           3 (3 of them injected)" in out


@pytest.mark.slow
def test_short_history_is_clean(tmp_path: Path) -> None:
    code, report, out = run_history(tmp_path, "--seed", "12")
    print(out)
    assert report["lost_count"] == 0, out[-6000:]
    assert report["self_exit_count"] == 0, out[-6000:]
    assert report["pending_left"] == 0, out[-6000:]
    assert report["published"] > 100, out[-6000:]
    assert code == 0, out[-6000:]
